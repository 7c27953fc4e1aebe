"""A webhook endpoint for the tests that counts every action's effects."""

from __future__ import annotations

import time
from typing import Any

from shared.cloud import FENCING_HEADER


class EffectRecorder:
    """An HTTP endpoint for the webhook driver that records every effect: calls per event
    id, and the most actions running at once overall and per VM. An event's payload
    ``{"delay": s}`` makes its action take ``s`` seconds."""

    def __init__(self) -> None:
        import threading
        from collections import Counter
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.calls: Counter[str] = Counter()
        #: per event id, the claim's fencing token of each call, in order
        self.tokens: dict[str, list[int]] = {}
        self.order: list[str] = []
        self.first_call: dict[str, float] = {}
        self.running = 0
        self.max_running = 0
        self.running_per_vm: Counter[tuple[str, str]] = Counter()
        self.max_per_vm = 0
        lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                import json

                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                vm = (body["host"], body["vm"])
                with lock:
                    recorder.calls[body["id"]] += 1
                    token = int(self.headers.get(FENCING_HEADER) or 0)
                    recorder.tokens.setdefault(body["id"], []).append(token)
                    recorder.first_call.setdefault(body["id"], time.time())
                    recorder.order.append(body["id"])
                    recorder.running += 1
                    recorder.max_running = max(recorder.max_running, recorder.running)
                    recorder.running_per_vm[vm] += 1
                    recorder.max_per_vm = max(recorder.max_per_vm, recorder.running_per_vm[vm])
                time.sleep(float(body.get("payload", {}).get("delay", 0)))
                with lock:
                    recorder.running -= 1
                    recorder.running_per_vm[vm] -= 1
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/effect"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
