"""The elasticity worker: keeps each profile's pool of Celery workers sized to its backlog.

``model`` (value types), ``policy`` (pure decisions), ``providers`` (spawn/stop workers),
``tracker`` (worker states from Celery events), ``engine`` (the control loop), ``admin``.
"""
