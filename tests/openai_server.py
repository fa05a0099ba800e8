"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests: POST /v1/chat/completions.

It keeps a request log (every request's parsed JSON body and whether it carried a bearer token)
and answers from a script of programmed replies, then from a responder:

    with ChatServer() as server:            # listens on 127.0.0.1:<free port>
        server.push(status=429, headers={"Retry-After": "0"})   # the next request gets a 429
        server.push(content="not json")                          # the one after, a malformed reply
        ... OpenAI(base_url=server.base_url, api_key="k") ...
        server.log                                               # what was asked

The default responder translates each item of the request ({"items": [{id, language, truncated,
text}]}) with the project's glossary backend and answers {"translations": {id: english}}; a test
may replace it (``server.responder = fn``; ``fn(items) -> {id: english}``).
"""

from __future__ import annotations

import collections
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


def glossary_responder(items: list[dict]) -> dict[str, str]:
    """Translate the request's items with the glossary backend (a deterministic 'model')."""
    from ecglm.text.translate.translator import GlossaryTranslator, Hint

    translator = GlossaryTranslator()
    english = translator.translate(
        [it["text"] for it in items], [Hint(it.get("language"), bool(it.get("truncated"))) for it in items]
    )
    return {it["id"]: en for it, en in zip(items, english)}


class ChatServer:
    """ThreadingHTTPServer implementing POST /v1/chat/completions (see module doc)."""

    def __init__(self, responder: Callable[[list[dict]], dict[str, str]] = glossary_responder):
        self.responder = responder
        self.log: list[dict] = []
        self.script: collections.deque = collections.deque()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                auth = self.headers.get("Authorization", "")
                with server.lock:
                    server.log.append(
                        {"path": self.path, "body": body, "bearer": auth.startswith("Bearer "), "auth": auth}
                    )
                    step = server.script.popleft() if server.script else None
                if self.path.rstrip("/") != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
                if step is not None and step.get("delay"):
                    time.sleep(step["delay"])
                if step is not None and step.get("status", 200) != 200:
                    message = {"error": {"message": step.get("message", "programmed failure"), "type": "test"}}
                    return self._send(step["status"], message, step.get("headers"))
                if step is not None and "content" in step:
                    content = step["content"]
                else:
                    items = json.loads(body["messages"][-1]["content"])["items"]
                    content = json.dumps({"translations": server.responder(items)}, ensure_ascii=False)
                reply = {
                    "id": f"chatcmpl-{len(server.log)}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": (body or {}).get("model", "unknown"),
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
                return self._send(200, reply)

            def _send(self, status: int, payload: dict, headers: dict | None = None):
                data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="chat-server", daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def push(self, status: int = 200, content: str | None = None, headers: dict | None = None,
             message: str | None = None, delay: float = 0.0, times: int = 1) -> None:
        """Program the next ``times`` replies: an HTTP error ``status``, or a 200 with ``content``."""
        step: dict = {"status": status, "headers": headers or {}, "delay": delay}
        if content is not None:
            step["content"] = content
        if message is not None:
            step["message"] = message
        with self.lock:
            self.script.extend(dict(step) for _ in range(times))

    def requested_texts(self) -> list[str]:
        """Every item text the server was asked to translate, in request order (repeats included)."""
        texts = []
        for entry in self.log:
            try:
                items = json.loads(entry["body"]["messages"][-1]["content"])["items"]
            except (TypeError, KeyError, ValueError):
                continue
            texts.extend(it["text"] for it in items)
        return texts

    def start(self) -> "ChatServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    def __enter__(self) -> "ChatServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
