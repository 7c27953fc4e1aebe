"""How a Carousel service starts its process: one log format for all, and its HTTP API
served by uvicorn at the log level and with the access log its settings say — on its
port, or on the first free one of several (:func:`listen_first_free`)."""

from __future__ import annotations

import errno
import logging
import socket
import sys
from collections.abc import Sequence
from typing import Any

import uvicorn

from shared.settings import CommonSettings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
#: uvicorn's own exit code when the server did not start
STARTUP_FAILURE = 3
#: the listen backlog, uvicorn's default
BACKLOG = 2048


def configure_logging(settings: CommonSettings) -> None:
    logging.basicConfig(level=settings.log_level, format=LOG_FORMAT)


def listen_first_free(host: str, ports: Sequence[int]) -> socket.socket:
    """A TCP socket listening on ``host`` at the first of ``ports`` that is free. Each is
    bound and listened on at once, so that processes trying the same ports at the same
    time each end up with a different one. OSError (EADDRINUSE, naming the ports) when
    none is free; any other error at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for port in ports:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(BACKLOG)
        except OSError as exc:
            sock.close()
            if exc.errno != errno.EADDRINUSE:
                raise
            continue
        return sock
    taken = ", ".join(str(p) for p in ports)
    raise OSError(errno.EADDRINUSE, f"no free port on {host}: {taken} are all in use")


def serve(
    app: Any,
    host: str,
    port: int,
    settings: CommonSettings,
    sock: socket.socket | None = None,
    **options: Any,
) -> None:
    """Serve ``app`` (an ASGI app, or an import string with ``factory=True``) until the
    process is told to stop; ``options`` go to uvicorn as they are (``uvicorn.run``,
    which alone runs several worker processes: the producer's ``PRODUCER_PROCESSES``).
    With ``sock`` (from :func:`listen_first_free`, at ``host`` and ``port``) on that
    socket; the process exits 3, as uvicorn's own start-up failures do, if the server
    did not start."""
    if sock is None:
        uvicorn.run(
            app,
            host=host,
            port=port,
            log_level=settings.log_level.lower(),
            access_log=settings.access_log,
            **options,
        )
        return
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=settings.log_level.lower(),
        access_log=settings.access_log,
        **options,
    )
    server = uvicorn.Server(config)
    # uvicorn says where it runs only for the sockets it binds itself
    shown = f"[{host}]" if ":" in host else host
    logging.getLogger("uvicorn.error").info(
        "Uvicorn running on http://%s:%d (Press CTRL+C to quit)", shown, port
    )
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    if not server.started:
        sys.exit(STARTUP_FAILURE)
