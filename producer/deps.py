"""Dependencies of the REST handlers, as ``Annotated`` aliases."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Response
from fastapi.routing import APIRoute

from producer.metrics import ProducerMetrics
from producer.service import EventService
from producer.settings import ProducerSettings
from shared.http import Credentials, bearer, verify_bearer


def get_service(request: Request) -> EventService:
    service: EventService = request.app.state.service
    return service


def get_metrics(request: Request) -> ProducerMetrics:
    metrics: ProducerMetrics = request.app.state.metrics
    return metrics


def authorize(request: Request, creds: Credentials) -> None:
    """401 unless the bearer token matches ``CAROUSEL_API_TOKEN`` (when that is set)."""
    settings: ProducerSettings = request.app.state.settings
    try:
        verify_bearer(settings.carousel_api_token, creds)
    except HTTPException:
        get_metrics(request).rejected.labels("unauthorized").inc()
        raise


class AuthorizedRoute(APIRoute):
    """A route that checks the bearer token before FastAPI reads the body, so that a
    caller without the token gets 401 whatever it sent, not a 400 or 422 about a body it
    may not send. (The ``Auth`` dependency alone runs only after the body is parsed.)"""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def authorized(request: Request) -> Response:
            authorize(request, await bearer(request))
            return await handle(request)

        return authorized


Auth = Annotated[None, Depends(authorize)]
Service = Annotated[EventService, Depends(get_service)]
