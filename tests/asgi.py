"""Calling a FastAPI app in-process over HTTP (httpx's ASGI transport), for unit tests;
or serving one on loopback (uvicorn in a thread) for a client that makes real calls."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from harness.processes import free_port, wait_until


def call(app: FastAPI, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


def get(app: FastAPI, path: str) -> httpx.Response:
    return call(app, "GET", path)


@contextmanager
def served(app: FastAPI) -> Iterator[str]:
    """``app`` served over real HTTP on loopback while the block runs; its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="served", daemon=True)
    thread.start()
    try:
        wait_until(
            lambda: server.started or not thread.is_alive(), timeout=15, what="the app serving"
        )
        assert server.started, "the app did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
