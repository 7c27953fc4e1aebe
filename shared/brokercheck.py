"""``python -m shared.brokercheck``: the check ``make up`` runs before starting anything.

Without a broker, every service would retry for ever, each in its own words. This asks
once, with a short timeout, whether RabbitMQ answers at ``AMQP_URL`` and takes its login:
if not, it prints one line naming the URL and how to start RabbitMQ, and exits 1. It then
warns (and exits 0) when another Carousel stack seems to run on the same broker under
the same ``CAROUSEL_PREFIX``: two stacks on one prefix take each other's events.

It reads the settings every service reads (``AMQP_URL``, ``CAROUSEL_PREFIX``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import amqp.exceptions
import kombu
import kombu.exceptions
from pydantic import ValidationError

from shared.settings import CommonSettings
from shared.topology import Topology

#: seconds to wait for a broker node to answer
TIMEOUT = 3.0
#: the image docker-compose.yml runs
RABBITMQ_IMAGE = "rabbitmq:3.13-management"


@dataclass(frozen=True)
class Answer:
    """What one broker node said: ``problem`` is None when it took the login."""

    url: str  # password masked
    problem: str | None = None
    #: nothing answered at all (rather than a broker refusing us)
    down: bool = False
    #: consumers on each queue that only a running Carousel consumes (when it answered)
    consumers: dict[str, int] = field(default_factory=dict)


def ask(url: str, topology: Topology, timeout: float = TIMEOUT) -> Answer:
    """Connect to ``url`` and log in; then count the consumers on the queues a running
    stack of ``topology`` consumes: the completions (its dispatcher) and the default
    actions queue (its workers)."""
    conn = kombu.Connection(url, connect_timeout=timeout)
    shown = conn.as_uri()
    try:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout)
        return Answer(shown, consumers=_consumers(conn, topology))
    except amqp.exceptions.AccessRefused:
        return Answer(shown, "refused the login: set the user and password in AMQP_URL")
    except amqp.exceptions.AMQPError as exc:  # e.g. NOT_ALLOWED - vhost ... not found
        return Answer(shown, f"refused the connection ({exc.reply_text or exc})")
    except (kombu.exceptions.OperationalError, OSError) as exc:
        return Answer(shown, f"does not answer ({exc})", down=True)
    finally:
        conn.release()


def _consumers(conn: kombu.Connection, topology: Topology) -> dict[str, int]:
    counts = {}
    for name in (topology.completions_queue.name, topology.actions_queue.name):
        channel = conn.channel()
        try:
            _, _, counts[name] = channel.queue_declare(name, passive=True)
        except amqp.exceptions.NotFound:  # closes the channel: the next one is new
            counts[name] = 0
        else:
            channel.close()
    return counts


def unreachable(answers: Sequence[Answer]) -> str:
    """The one line printed when no node took the login: what each said and, when none
    answered at all, how to start RabbitMQ."""
    said = "; ".join(f"{a.url} {a.problem}" for a in answers)
    if not all(a.down for a in answers):
        return f"carousel: RabbitMQ at AMQP_URL {said}"
    return (
        f"carousel: no RabbitMQ at AMQP_URL: {said}. Is it running? Start it with "
        f"`rabbitmq-server -detached` (where it is installed) or `docker run -d -p 5672:5672 "
        f"{RABBITMQ_IMAGE}`, or set AMQP_URL to yours."
    )


def shared_prefix(answer: Answer, prefix: str) -> str | None:
    """The warning when a stack already consumes this prefix's queues, or None."""
    busy = {name: n for name, n in answer.consumers.items() if n}
    if not busy:
        return None
    who = ", ".join(f"{name} has {n} consumer(s)" for name, n in busy.items())
    return (
        f"carousel: warning: another Carousel seems to run with CAROUSEL_PREFIX={prefix} on "
        f"{answer.url} ({who}); two stacks on one prefix take each other's events. Stop it, "
        f"or give this one its own: CAROUSEL_PREFIX={prefix}-2 make up (or in .env)."
    )


def main() -> int:
    try:
        settings = CommonSettings()
    except ValidationError as exc:
        said = "; ".join(
            f"{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
        )
        print(f"carousel: {said}", file=sys.stderr)
        return 1
    answers = []
    for url in settings.amqp_urls:  # a cluster's nodes: the first that answers will do
        answer = ask(url, settings.topology)
        if answer.problem is None:
            warning = shared_prefix(answer, settings.carousel_prefix)
            if warning:
                print(warning, file=sys.stderr)
            return 0
        answers.append(answer)
    print(unreachable(answers), file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
