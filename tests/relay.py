"""A misbehaving HTTP relay for the PACS tests: a real HTTP server in the test process, on 127.0.0.1, that
forwards every request to a real server (the test's Orthanc) and, for the requests a rule matches, answers
503 a given number of times first, cuts the response body short (the connection closed part-way, the
headers having promised the whole body), or adds ``limit=N`` to the query (a search answered a page of N
results at a time, as archives that cap their answers do; Orthanc honours limit and offset). It counts the
requests each rule matched, so a test can assert how many attempts a client made."""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

FORWARD_TIMEOUT_S = 30
# Headers that belong to one connection, not to the message: never forwarded.
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "content-encoding"}


@dataclass
class Rule:
    """Requests whose ``"METHOD /path"`` matches ``pattern``: the first ``fail`` get HTTP 503, with ``cut``
    every forwarded response is cut to that fraction of its body, and with ``limit`` every one is forwarded
    with ``limit=N`` in its query. ``seen`` counts the matches."""

    pattern: str
    fail: int = 0
    cut: float | None = None
    limit: int | None = None
    seen: int = 0


class Relay:
    """Forward to ``target`` (``http://127.0.0.1:PORT``) through ``rules``; :attr:`root` is the relay's URL."""

    def __init__(self, target: str, rules: list[Rule]) -> None:
        self.target, self.rules = target.rstrip("/"), rules
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.root = f"http://127.0.0.1:{self._server.server_address[1]}"

    def serve(self) -> None:
        """Answer requests until :meth:`close` (in a background thread)."""
        self._server.serve_forever(poll_interval=0.05)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def rule_for(self, method: str, path: str) -> tuple[Rule | None, bool]:
        """The first rule matching the request, and whether this request is to fail (counted here)."""
        for rule in self.rules:
            if re.search(rule.pattern, f"{method} {path}"):
                with self._lock:
                    rule.seen += 1
                    return rule, rule.seen <= rule.fail
        return None, False


def _handler(relay: Relay) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            rule, fail = relay.rule_for(self.command, self.path)
            if fail:
                self._send(503, {"Content-Type": "text/plain"}, b"relay: try again")
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            path = self.path
            if rule is not None and rule.limit is not None:
                path += f"{'&' if '?' in path else '?'}limit={rule.limit}"
            answer = requests.request(
                self.command, relay.target + path, headers=headers, data=body, timeout=FORWARD_TIMEOUT_S
            )
            out = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_BY_HOP}
            if rule is not None and rule.cut is not None:
                self._send(answer.status_code, out, answer.content, keep=int(len(answer.content) * rule.cut))
            else:
                self._send(answer.status_code, out, answer.content)

        def _send(self, status: int, headers: dict[str, str], body: bytes, keep: int | None = None) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))  # the whole body is promised...
            if keep is not None:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body if keep is None else body[:keep])  # ...and, when cut, not all of it sent
            if keep is not None:
                self.wfile.flush()
                self.close_connection = True

        do_GET = do_POST = do_PUT = do_DELETE = _forward

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet: the tests assert on the counts, not on a log

    return Handler


@contextlib.contextmanager
def running_relay(target: str, rules: list[Rule]) -> Iterator[Relay]:
    """A :class:`Relay` serving in a background thread; shut down (and its thread joined) on exit."""
    relay = Relay(target, rules)
    thread = threading.Thread(target=relay.serve, daemon=True)
    thread.start()
    try:
        yield relay
    finally:
        relay.close()
        thread.join(timeout=10)
