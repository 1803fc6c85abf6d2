"""The `openai` backend: any OpenAI-compatible chat-completions server (vLLM, TGI, llama.cpp, ...).

`base_url` is required (e.g. `http://localhost:8000/v1` for `vllm serve`). The API key comes from the
environment variable `OPENAI_API_KEY` only; when it is unset the string "EMPTY" is sent, which local
servers started without `--api-key` accept (they ignore the header). Each request is one chat
completion with a system message (the request's own, else the backend's `system`), `max_tokens` =
`max_new_tokens`, `temperature`, `top_p` (only when != 1.0) and `stop`. Concurrency, retries, errors
and `prices` behave as in the `anthropic` backend. `base_url` is not part of the cache key: the same
model served elsewhere shares cached answers.
"""

from __future__ import annotations

import os
from typing import Any

import openai

from lmgcot.errors import ConfigError
from lmgcot.llm.api import ApiLargeLM
from lmgcot.llm.base import Completion, Request

API_KEY_ENV = "OPENAI_API_KEY"
# What OpenAI-compatible local servers conventionally take when they check no key.
NO_KEY = "EMPTY"


class OpenAILargeLM(ApiLargeLM):
    """A chat model behind an OpenAI-compatible endpoint, via the official `openai` SDK."""

    backend = "openai"
    api_key_env = API_KEY_ENV
    _api_errors = (openai.APIError,)

    def __init__(self, model: str, base_url: str | None = None, **kwargs: Any):
        """Settings as in `ApiLargeLM`; `base_url` (the server's /v1 address) is required."""
        if not base_url:
            raise ConfigError(
                "large_lm.base_url: required for the openai backend, e.g. http://localhost:8000/v1"
            )
        super().__init__(model, base_url=base_url, **kwargs)
        self._api_key = os.environ.get(API_KEY_ENV, "").strip() or NO_KEY

    def _make_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            api_key=self._api_key,
            base_url=self.base_url,
            timeout=self.timeout_s,
            max_retries=0,  # retried by lmgcot.llm.retry, with our backoff and count
        )

    async def _call(self, client: openai.AsyncOpenAI, request: Request) -> Completion:
        p = request.params
        messages = []
        system = self.system_for(p)
        if system:
            messages.append({"role": "system", "content": system})
        messages.append({"role": "user", "content": request.prompt})
        kwargs: dict = {
            "model": self.model,
            "messages": messages,
            # max_tokens, not max_completion_tokens: the name local servers understand.
            "max_tokens": p.max_new_tokens,
            "temperature": p.temperature,
        }
        if p.top_p != 1.0:
            kwargs["top_p"] = p.top_p
        if p.stop:
            kwargs["stop"] = list(p.stop)
        response = await client.chat.completions.create(**kwargs)
        text = (response.choices[0].message.content or "") if response.choices else ""
        usage = response.usage
        # Some servers omit usage; zero tokens then, rather than a failed run.
        n_in = int(usage.prompt_tokens or 0) if usage else 0
        n_out = int(usage.completion_tokens or 0) if usage else 0
        return Completion(text, n_in, n_out)
