"""``carousel-flower``: Celery's Flower dashboard on the workers' app, behind basic auth."""
