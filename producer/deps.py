"""Dependencies of the REST handlers, as ``Annotated`` aliases."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from producer.metrics import ProducerMetrics
from producer.service import EventService
from producer.settings import ProducerSettings

bearer = HTTPBearer(auto_error=False)


def get_service(request: Request) -> EventService:
    service: EventService = request.app.state.service
    return service


def get_metrics(request: Request) -> ProducerMetrics:
    metrics: ProducerMetrics = request.app.state.metrics
    return metrics


def authorize(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """401 unless the bearer token matches ``CAROUSEL_API_TOKEN`` (when that is set)."""
    settings: ProducerSettings = request.app.state.settings
    token = settings.carousel_api_token
    if not token:
        return
    if creds is None or not secrets.compare_digest(creds.credentials.encode(), token.encode()):
        get_metrics(request).rejected.labels("unauthorized").inc()
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing or wrong bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )


Auth = Annotated[None, Depends(authorize)]
Service = Annotated[EventService, Depends(get_service)]
