"""``python -m shared.healthcheck URL``: exit 0 when ``URL`` answers 2xx, else print why
and exit 1. docker-compose.yml's healthchecks call it against each service's ``/readyz``
(the images have no curl). ``--basic-auth-env VAR`` sends the first ``user:password`` of
the comma-separated list in ``$VAR`` (Flower's ``FLOWER_BASIC_AUTH``)."""

from __future__ import annotations

import argparse
import base64
import os
import sys
import urllib.error
import urllib.request


def probe(url: str, basic_auth: str = "", timeout: float = 3.0) -> str | None:
    """None when ``url`` answers 2xx; otherwise why not, in a few words."""
    request = urllib.request.Request(url)
    if basic_auth:
        token = base64.b64encode(basic_auth.encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        body = exc.read(300).decode(errors="replace")
        return f"{url} answered {exc.code}: {body}"
    except (OSError, ValueError) as exc:
        return f"{url} unreachable: {exc}"
    return None if 200 <= status < 300 else f"{url} answered {status}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.healthcheck")
    parser.add_argument("url")
    parser.add_argument("--basic-auth-env", default="", metavar="VAR")
    args = parser.parse_args(argv)
    credentials = os.environ.get(args.basic_auth_env, "") if args.basic_auth_env else ""
    problem = probe(args.url, credentials.split(",", 1)[0])
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
