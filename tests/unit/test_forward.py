"""Where a dispatcher shard says the others reach it (scheduler.dispatcher.forward)."""

from __future__ import annotations

import socket

import pytest

from scheduler.dispatcher.forward import advertised_url


def test_a_configured_url_wins() -> None:
    assert advertised_url("http://d1.example:9001/", "0.0.0.0", 8001) == "http://d1.example:9001"


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_an_api_on_loopback_is_reached_on_loopback(host: str) -> None:
    assert advertised_url("", host, 8123) == "http://127.0.0.1:8123"


def test_an_api_on_every_address_is_reached_at_this_machines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "shard-7")
    monkeypatch.setattr(socket, "gethostbyname", lambda name: {"shard-7": "172.18.0.9"}[name])
    assert advertised_url("", "0.0.0.0", 8001) == "http://172.18.0.9:8001"
