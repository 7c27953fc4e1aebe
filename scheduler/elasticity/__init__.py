"""The elasticity worker: keeps each profile's pool of Celery workers sized to its backlog.

``model`` (value types, pool settings, named conditions), ``scaling`` (the scaling rules:
pure decisions), ``engine`` (the control loop), ``tracker`` (worker states from Celery
events), ``providers`` (spawn/stop workers: local processes; ``kubernetes``: a
Deployment's replicas), ``control`` (Celery remote control), ``backlog`` (work waiting per
profile), ``admin`` (/status and the operations routes), ``settings``, ``errors``,
``main`` (``carousel-elasticity``).
"""
