"""The ``scheduler`` package: everything that acts on the events the producer stored, one
package per role (each with its own settings, errors and entry point):

- :mod:`scheduler.dispatcher` — ``carousel-dispatcher``: follows the mapping, holds the head
  of every event queue, picks in nested round-robin within the limits, hands each pick to
  the workers as a Celery task; admin API on 8001.
- :mod:`scheduler.worker` — ``carousel-worker``: Carousel's one Celery task, which runs an
  event's action through a driver, exactly once in effect.
- :mod:`scheduler.elasticity` — ``carousel-elasticity``: grows and shrinks the pools of
  workers from the backlog; admin API on 8002.
- :mod:`scheduler.flower` — ``carousel-flower``: Celery's Flower on the workers' app.

:mod:`scheduler.celery_app` is the Celery app all of them build, and the task's name.
"""
