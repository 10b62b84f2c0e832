"""A loopback HTTP server that records every POST: the far end of webhook and Slack alerts."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class HttpRecorder:
    """A loopback HTTP server that records every POST and answers `status`."""

    server: ThreadingHTTPServer
    requests: list[Received] = field(default_factory=list)
    status: int = 200
    reply: bytes = b"ok"
    arrived: threading.Condition = field(default_factory=threading.Condition)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.requests) >= count, timeout)
        return list(self.requests)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_recorder() -> HttpRecorder:
    """Start a recorder on a free port (serving from a daemon thread); stop it with `.stop()`."""
    recorder: HttpRecorder

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # the name http.server calls
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                body: Any = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
            with recorder.arrived:
                recorder.requests.append(Received(self.path, dict(self.headers.items()), body))
                recorder.arrived.notify_all()
            self.send_response(recorder.status)
            self.send_header("Content-Type", "application/json" if recorder.reply.startswith(b"{") else "text/plain")
            self.send_header("Content-Length", str(len(recorder.reply)))
            self.end_headers()
            self.wfile.write(recorder.reply)

        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    recorder = HttpRecorder(server)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return recorder


@contextmanager
def http_recorder() -> Iterator[HttpRecorder]:
    """A recorder for the length of a `with` block (fixtures of any scope use this)."""
    recorder = start_recorder()
    try:
        yield recorder
    finally:
        recorder.stop()
