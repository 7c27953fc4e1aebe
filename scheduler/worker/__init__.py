"""The Celery worker (``carousel-worker``): :mod:`.app` (the Celery app factory and its
one task), :mod:`.execution` (running one event, exactly once in effect), :mod:`.drivers`
(how an action is carried out), :mod:`.settings`, :mod:`.errors` and :mod:`.main`."""
