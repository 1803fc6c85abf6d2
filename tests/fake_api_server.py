"""A local stand-in for the Anthropic and OpenAI HTTP APIs, with injectable faults, for SDK tests."""

from __future__ import annotations

import hashlib
import json
import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

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
    * `fault_rate`: every attempt (Messages / chat, not batches) fails independently with this
      probability (a seeded draw), with 429 (`retry-after: 0`), 500 or 529 in turn.
    * `failing_rate`: this fraction of distinct bodies (by hash) fail every attempt with
      `failing_status` (400: retrying cannot help; 500: every retry is spent).
    * `fail_with`: every request fails: 401, 500, 529 or "credit" (400, credit balance too low).
    * `retry_after_ms`: also send `retry-after-ms` on 429s (lets SDK retries skip their backoff).
    * `replier`: answers chosen prompts itself (e.g. a judge's ratings).
    * `hold_after`: requests after the first this many wait until `release` is set (a test stops
      the traffic at an exact count instead of timing it).
    * `open_at_in_flight`: every request waits until this many are in flight together, then
      `release` is set for good (a client's concurrency shown by a count, not a latency).
    A held request waits at most `hold_timeout_s`: the bound of a hang, not a timing.

    Message Batches (`POST /v1/messages/batches`, `GET .../{id}`, `GET .../{id}/results`): a batch
    ends `batch_delay_s` after it was created (the current value is used at each poll), and its
    results are served in shuffled order from the absolute `results_url`. `batch_fault_rate` of the
    distinct bodies come back `errored` (api_error) or `expired` in their first batch;
    prompts containing `invalid_marker` always come back `errored` (invalid_request_error).
    `billed` counts the requests a batch completed, per body.

    Prompt caching: a user text block carrying `cache_control` is a cached prefix; its words count
    as `cache_creation_input_tokens` the first time and `cache_read_input_tokens` after.
    """

    latency_s: float = 0.0
    transient_rate: float = 0.0
    transient_attempts: int = 1
    fail_with: int | str | None = None
    retry_after_ms: int | None = None
    # Optional prompt -> reply text; None from it (or no replier) gives the default reply.
    replier: Callable[[str], str | None] | None = None
    batch_delay_s: float = 0.0
    batch_fault_rate: float = 0.0
    invalid_marker: str | None = None
    fault_rate: float = 0.0
    failing_rate: float = 0.0
    failing_status: int = 400
    hold_after: int | None = None
    open_at_in_flight: int | None = None
    hold_timeout_s: float = 60.0
    release: threading.Event = field(default_factory=threading.Event, repr=False)
    # 200 replies sent, per body (what a real API would have billed).
    paid: dict[str, int] = field(default_factory=dict)
    # (time, body key) of each 200 Messages / chat reply once its bytes were written.
    sent: list[tuple[float, str]] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    max_in_flight: int = 0
    batches: dict[str, dict] = field(default_factory=dict)
    billed: dict[str, int] = field(default_factory=dict)
    # The token usage of every reply that succeeded (a Messages / chat reply or a batch result),
    # in Anthropic's field names: what an invoice would bill.
    usages: list[dict[str, int]] = field(default_factory=list)
    _prefixes: set[str] = field(default_factory=set, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _attempts: dict[str, int] = field(default_factory=dict, repr=False)
    _served: dict[str, int] = field(default_factory=dict, repr=False)
    _in_flight: int = 0
    _admitted: int = 0
    _draws: random.Random = field(default_factory=lambda: random.Random(0), repr=False)
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
        self.release.set()  # no request is left waiting at a gate
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
            self._admitted = 0
            self.batches.clear()
            self.billed.clear()
            self.paid.clear()
            self.sent.clear()
            self.usages.clear()
            self._prefixes.clear()

    # -- answering --------------------------------------------------------------------------

    def handle(self, path: str, headers: dict[str, str], body: dict) -> tuple[int, dict, Any]:
        """(status, extra headers, JSON reply) for one request."""
        key = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            self._attempts[key] = attempt = self._attempts.get(key, 0) + 1
            self._admitted += 1
            gated = self.open_at_in_flight is not None
            if gated and self._in_flight >= self.open_at_in_flight:
                self.release.set()
            held = gated or (self.hold_after is not None and self._admitted > self.hold_after)
        try:
            if held:
                self.release.wait(self.hold_timeout_s)
            if self.latency_s:
                time.sleep(self.latency_s)
            status, extra, reply = self._answer(path, body, key, attempt)
        finally:
            with self._lock:
                self._in_flight -= 1
        with self._lock:
            self.requests.append(Recorded(path, headers, body, status))
        return status, extra, reply

    def _answer(self, path: str, body: dict, key: str, attempt: int) -> tuple[int, dict, Any]:
        if path.startswith("/v1/messages/batches"):
            return self._batch_route(path, body)
        anthropic = path == "/v1/messages"
        if path not in ("/v1/messages", "/v1/chat/completions"):
            return 404, {}, _error(anthropic, 404, f"no route {path}")
        if self.fail_with is not None:
            if self.fail_with == "credit":
                return 400, {}, _error(anthropic, 400, CREDIT_MESSAGE)
            status = int(self.fail_with)
            message = AUTH_MESSAGE if status == 401 else f"injected {status}"
            return status, {}, _error(anthropic, status, message)
        if int(key[10:18], 16) / 16**8 < self.failing_rate:
            status = self.failing_status
            return status, {}, _error(anthropic, status, f"injected permanent {status}")
        chosen = int(key[:8], 16) / 16**8 < self.transient_rate
        with self._lock:
            drawn = self.fault_rate > 0 and self._draws.random() < self.fault_rate
        if drawn or (chosen and attempt <= self.transient_attempts):
            status = (429, 500, 529)[(attempt - 1 + int(key[8:10], 16)) % 3]
            extra = {"retry-after": "0"} if status == 429 else {}
            if status == 429 and self.retry_after_ms is not None:
                extra["retry-after-ms"] = str(self.retry_after_ms)
            return status, extra, _error(anthropic, status, f"injected {status}")
        with self._lock:
            self.paid[key] = self.paid.get(key, 0) + 1
        return 200, {}, self._reply(body, key, anthropic)

    def _reply(self, body: dict, key: str, anthropic: bool) -> dict:
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
        usage = {"input_tokens": n_in, "output_tokens": n_out}
        if anthropic:
            prefix = _cached_prefix(body)
            if prefix:
                n_prefix = len(prefix.split())
                with self._lock:
                    seen = prefix in self._prefixes
                    self._prefixes.add(prefix)
                usage["input_tokens"] = n_in - n_prefix
                usage["cache_read_input_tokens" if seen else "cache_creation_input_tokens"] = (
                    n_prefix
                )
        with self._lock:
            self.usages.append(dict(usage))
        if anthropic:
            return {
                "id": f"msg_{key[:16]}",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": usage,
            }
        return {
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
        }

    # -- Message Batches --------------------------------------------------------------------

    def _batch_route(self, path: str, body: dict) -> tuple[int, dict, Any]:
        parts = path.split("?")[0].rstrip("/").split("/")  # ['', 'v1', 'messages', 'batches', ...]
        if len(parts) == 4:
            return self._create_batch(body)
        batch = self.batches.get(parts[4])
        if batch is None:
            return 404, {}, _error(True, 404, f"no batch {parts[4]}")
        if len(parts) == 5:
            return 200, {}, self._batch_object(batch)
        if len(parts) == 6 and parts[5] == "results":
            if not self._batch_ended(batch):
                return 400, {}, _error(True, 400, "batch still processing")
            return 200, {"content-type": "application/binary"}, _Jsonl(batch["results"])
        return 404, {}, _error(True, 404, f"no route {path}")

    def _create_batch(self, body: dict) -> tuple[int, dict, dict]:
        with self._lock:
            batch_id = f"msgbatch_{len(self.batches) + 1:04d}"
        results = []
        for item in body["requests"]:
            params = item["params"]
            key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
            with self._lock:
                self._attempts[key] = attempt = self._attempts.get(key, 0) + 1
            prompt, _ = _prompt_and_system(params, True)
            chosen = int(key[:8], 16) / 16**8 < self.batch_fault_rate
            if self.invalid_marker and self.invalid_marker in prompt:
                result = _batch_error("invalid_request_error", "prompt is not allowed")
            elif chosen and attempt == 1:
                result = (
                    _batch_error("api_error", "injected batch error")
                    if int(key[8:10], 16) % 2
                    else {"type": "expired"}
                )
            else:
                result = {"type": "succeeded", "message": self._reply(params, key, True)}
                with self._lock:
                    self.billed[key] = self.billed.get(key, 0) + 1
            results.append({"custom_id": item["custom_id"], "result": result})
        # Unordered, as the real API returns them.
        random.Random(batch_id).shuffle(results)
        batch = {"id": batch_id, "created": time.time(), "results": results}
        with self._lock:
            self.batches[batch_id] = batch
        return 200, {}, self._batch_object(batch)

    def _batch_ended(self, batch: dict) -> bool:
        return time.time() >= batch["created"] + self.batch_delay_s

    def _batch_object(self, batch: dict) -> dict:
        ended = self._batch_ended(batch)
        kinds = [r["result"]["type"] for r in batch["results"]]
        counts = {k: (kinds.count(k) if ended else 0) for k in ("succeeded", "errored", "expired")}
        counts["canceled"] = 0
        counts["processing"] = 0 if ended else len(kinds)
        stamp = "2026-11-21T00:00:00Z"
        return {
            "id": batch["id"],
            "type": "message_batch",
            "processing_status": "ended" if ended else "in_progress",
            "request_counts": counts,
            "created_at": stamp,
            "expires_at": "2026-11-22T00:00:00Z",
            "ended_at": stamp if ended else None,
            "cancel_initiated_at": None,
            "archived_at": None,
            "results_url": (
                f"{self.url}/v1/messages/batches/{batch['id']}/results" if ended else None
            ),
        }


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


class _Jsonl(list):
    """A reply sent as JSON lines (batch results) rather than one JSON document."""


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
        self._send(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._send({})

    def _send(self, body: dict) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, extra, reply = self.server_state.handle(self.path, headers, body)
        if isinstance(reply, _Jsonl):
            data = "".join(json.dumps(row) + "\n" for row in reply).encode()
        else:
            data = json.dumps(reply).encode()
        self.send_response(status)
        if "content-type" not in extra:
            self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()
        if status == 200 and self.path in ("/v1/messages", "/v1/chat/completions"):
            key = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
            with self.server_state._lock:
                self.server_state.sent.append((time.time(), key))

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


def _cached_prefix(body: dict) -> str:
    """The text of the user blocks up to the last `cache_control` breakpoint."""
    text = ""
    for m in body.get("messages", []):
        content = m.get("content")
        if not isinstance(content, list):
            continue
        seen = ""
        for block in content:
            seen += block.get("text", "")
            if block.get("cache_control"):
                text = seen
    return text


def _batch_error(kind: str, message: str) -> dict:
    return {
        "type": "errored",
        "error": {"type": "error", "error": {"type": kind, "message": message}},
    }


def _error(anthropic: bool, status: int, message: str) -> dict:
    if anthropic:
        kind = _ANTHROPIC_ERROR_TYPES.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}
    return {"error": {"message": message, "type": "invalid_request_error", "code": status}}
