"""Calling a FastAPI app in-process over HTTP (httpx's ASGI transport), for unit tests."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from fastapi import FastAPI


def call(app: FastAPI, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


def get(app: FastAPI, path: str) -> httpx.Response:
    return call(app, "GET", path)
