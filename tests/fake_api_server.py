"""A local stand-in for the Anthropic and OpenAI HTTP APIs, with injectable faults, for SDK tests."""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CREDIT_MESSAGE = (
    "Your credit balance is too low to access the Anthropic API. "
    "Please go to Plans & Billing to upgrade or purchase credits."
)
AUTH_MESSAGE = "invalid x-api-key"

# Anthropic's error `type` per status, as its API reports them.
_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass
class Recorded:
    """One HTTP request as the server saw it (faulted attempts included)."""

    path: str
    headers: dict[str, str]
    body: dict
    status: int


@dataclass
class FakeApiServer:
    """Serves `POST /v1/messages` (Anthropic) and `POST /v1/chat/completions` (OpenAI) on
    127.0.0.1:<free port>; use as a context manager. Replies are a pure function of the request
    body (when sampling, i.e. temperature > 0 or none given, each repeat of a body also gets
    its own sample number).

    Faults, settable at any time:
    * `latency_s`: every request waits this long before answering.
    * `transient_rate`: this fraction of distinct request bodies (chosen by a hash, so reproducible)
      fail their first `transient_attempts` attempts with 429 (`retry-after: 0`), 500 or 529 in turn.
    * `fail_with`: every request fails: 401, 500, 529 or "credit" (400, credit balance too low).
    * `retry_after_ms`: also send `retry-after-ms` on 429s (lets SDK retries skip their backoff).
    * `replier`: answers chosen prompts itself (e.g. a judge's ratings).
    """

    latency_s: float = 0.0
    transient_rate: float = 0.0
    transient_attempts: int = 1
    fail_with: int | str | None = None
    retry_after_ms: int | None = None
    # Optional prompt -> reply text; None from it (or no replier) gives the default reply.
    replier: Callable[[str], str | None] | None = None
    requests: list[Recorded] = field(default_factory=list)
    max_in_flight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _attempts: dict[str, int] = field(default_factory=dict, repr=False)
    _served: dict[str, int] = field(default_factory=dict, repr=False)
    _in_flight: int = 0
    _httpd: ThreadingHTTPServer | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    # -- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> FakeApiServer:
        fake = self

        class Handler(_Handler):
            server_state = fake

        self._httpd = _Server(("127.0.0.1", 0), Handler)
        # A short poll interval: shutdown() waits for it, once per test.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        assert self._httpd is not None and self._thread is not None
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    @property
    def port(self) -> int:
        assert self._httpd is not None, "start the server with `with FakeApiServer() as s:`"
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- what tests look at -----------------------------------------------------------------

    def ok_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.status == 200]

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._attempts.clear()
            self._served.clear()
            self.max_in_flight = 0

    # -- answering --------------------------------------------------------------------------

    def handle(self, path: str, headers: dict[str, str], body: dict) -> tuple[int, dict, dict]:
        """(status, extra headers, JSON reply) for one request."""
        key = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            self._attempts[key] = attempt = self._attempts.get(key, 0) + 1
        try:
            if self.latency_s:
                time.sleep(self.latency_s)
            status, extra, reply = self._answer(path, body, key, attempt)
        finally:
            with self._lock:
                self._in_flight -= 1
        with self._lock:
            self.requests.append(Recorded(path, headers, body, status))
        return status, extra, reply

    def _answer(self, path: str, body: dict, key: str, attempt: int) -> tuple[int, dict, dict]:
        anthropic = path == "/v1/messages"
        if path not in ("/v1/messages", "/v1/chat/completions"):
            return 404, {}, _error(anthropic, 404, f"no route {path}")
        if self.fail_with is not None:
            if self.fail_with == "credit":
                return 400, {}, _error(anthropic, 400, CREDIT_MESSAGE)
            status = int(self.fail_with)
            message = AUTH_MESSAGE if status == 401 else f"injected {status}"
            return status, {}, _error(anthropic, status, message)
        chosen = int(key[:8], 16) / 16**8 < self.transient_rate
        if chosen and attempt <= self.transient_attempts:
            status = (429, 500, 529)[(attempt - 1 + int(key[8:10], 16)) % 3]
            extra = {"retry-after": "0"} if status == 429 else {}
            if status == 429 and self.retry_after_ms is not None:
                extra["retry-after-ms"] = str(self.retry_after_ms)
            return status, extra, _error(anthropic, status, f"injected {status}")
        prompt, system = _prompt_and_system(body, anthropic)
        temperature = body.get("temperature")
        sample = 1
        # No temperature (Anthropic's current API takes none) means the API's default, 1.0.
        if temperature is None or temperature > 0:
            # Identical bodies are the samples of one prompt: each repeat gets the next number.
            with self._lock:
                self._served[key] = sample = self._served.get(key, 0) + 1
        custom = self.replier(prompt) if self.replier is not None else None
        text = custom if custom is not None else reply_text(prompt, temperature, system, sample)
        n_in = len(prompt.split()) + len(system.split())
        n_out = len(text.split())
        model = body.get("model", "unknown")
        if anthropic:
            return (
                200,
                {},
                {
                    "id": f"msg_{key[:16]}",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [{"type": "text", "text": text}],
                    "stop_reason": "end_turn",
                    "stop_sequence": None,
                    "usage": {"input_tokens": n_in, "output_tokens": n_out},
                },
            )
        return (
            200,
            {},
            {
                "id": f"chatcmpl-{key[:16]}",
                "object": "chat.completion",
                "created": 0,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": n_in,
                    "completion_tokens": n_out,
                    "total_tokens": n_in + n_out,
                },
            },
        )


def reply_text(
    prompt: str, temperature: float | None = None, system: str = "", sample: int = 1
) -> str:
    """What the server answers to a prompt (for expected values in tests); `temperature` is the
    one the request body carried, None when it carried none."""
    text = f"reply {hashlib.sha256((system + chr(31) + prompt).encode()).hexdigest()[:10]}"
    if temperature is not None:
        text += f" t={float(temperature):g}"
    return text + (f" sample={sample}" if temperature is None or temperature > 0 else "")


class _Server(ThreadingHTTPServer):
    # The default listen backlog (5) drops bursts of concurrent connects, and a dropped SYN costs
    # the client a 1 s retransmit: that would cap the concurrency this server is meant to test.
    request_queue_size = 256
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        # A client that gave up (a failed batch cancels its other calls) is not a server error.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDKs' connection pools expect
    # Headers and body go out in separate writes; with Nagle on, delayed ACKs add ~40 ms to each.
    disable_nagle_algorithm = True
    server_state: FakeApiServer

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            body = {"_unparsed": raw.decode("utf-8", "replace")}
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, extra, reply = self.server_state.handle(self.path, headers, body)
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args) -> None:  # noqa: A002 (base class signature)
        pass  # quiet test output


def _prompt_and_system(body: dict, anthropic: bool) -> tuple[str, str]:
    system = ""
    prompt_parts = []
    if anthropic:
        system = body.get("system") or ""
        if isinstance(system, list):
            system = "".join(b.get("text", "") for b in system)
    for m in body.get("messages", []):
        content = m.get("content", "")
        if isinstance(content, list):
            content = "".join(b.get("text", "") for b in content if isinstance(b, dict))
        if m.get("role") == "system":
            system = content
        else:
            prompt_parts.append(content)
    return "\n".join(prompt_parts), system


def _error(anthropic: bool, status: int, message: str) -> dict:
    if anthropic:
        kind = _ANTHROPIC_ERROR_TYPES.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}
    return {"error": {"message": message, "type": "invalid_request_error", "code": status}}
