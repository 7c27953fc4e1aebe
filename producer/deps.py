"""Dependencies of the REST handlers, as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from producer.metrics import ProducerMetrics
from producer.service import EventService
from producer.settings import ProducerSettings
from shared.http import Credentials, token_first, verify_bearer


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


#: producer routes check the token before FastAPI reads the body
AuthorizedRoute = token_first(authorize)


Auth = Annotated[None, Depends(authorize)]
Service = Annotated[EventService, Depends(get_service)]
