"""A local HTTP receiver for webhook alerts (127.0.0.1, free port), checking signatures.

Importable from tests as ``webhook_support``.
"""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Received:
    body: dict[str, Any]
    signature_ok: bool


@dataclass
class WebhookReceiver:
    """Records every POST; answers ``fail_first`` of them with 500 to exercise retries."""

    secret: bytes
    fail_first: int = 0
    received: list[Received] = field(default_factory=list)
    attempts: int = 0

    def __post_init__(self) -> None:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                ts = self.headers.get("X-InferShield-Timestamp", "")
                sig = self.headers.get("X-InferShield-Signature", "")
                want = hmac.new(receiver.secret, ts.encode() + b"." + body, hashlib.sha256)
                with receiver._lock:
                    receiver.attempts += 1
                    failing = receiver.attempts <= receiver.fail_first
                    if not failing:
                        receiver.received.append(
                            Received(
                                json.loads(body),
                                hmac.compare_digest(sig, "sha256=" + want.hexdigest()),
                            )
                        )
                    receiver._cond.notify_all()
                self.send_response(500 if failing else 204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/alerts"

    def wait_for(self, n: int, timeout: float = 10.0) -> list[Received]:
        with self._cond:
            self._cond.wait_for(lambda: len(self.received) >= n, timeout)
            return list(self.received)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)
