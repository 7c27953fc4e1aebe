"""The Celery worker (``carousel-worker``): :mod:`.task` (Carousel's one task, registered
on the shared app of :mod:`scheduler.celery_app`), :mod:`.execution` (running one event,
exactly once in effect), :mod:`.drivers` (how an action is carried out), :mod:`.settings`,
:mod:`.errors` and :mod:`.main`."""
