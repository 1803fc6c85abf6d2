"""The `hf` backend: a local or hub transformers model (seq2seq or causal) as the frozen large LM.

Prompt handling: `params.system`, when set, is prepended to the prompt followed by a blank line
(`system + "\\n\\n" + prompt`); no chat template is applied, the model sees the raw text. With
`max_input_tokens` set, over-long prompts lose their *beginning*, so the question and the answer
cue at the end survive.

Sampling (temperature > 0) is reproducible per request and independent of batch composition:
instead of the global RNG, each row draws Gumbel noise from its own generator seeded by a hash of
(system, prompt, sample_index) and decoding takes the argmax, which samples exactly from the
temperature / top-p distribution (Gumbel-max trick). So sample i of a prompt is the same whether it
runs alone or in a batch, and samples with different indices differ.

Stop strings end a row's generation as soon as one appears; the returned text is cut before the
stop string that completed first. `output_tokens` counts the tokens actually generated (up to and
including eos, or up to the token that completed a stop string), never padding.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    LogitsProcessorList,
    StoppingCriteriaList,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)

from lmgcot.errors import BackendError, ConfigError
from lmgcot.llm.base import Completion, GenerationParams, LargeLM, Request
from lmgcot.llm.cache import CallCache
from lmgcot.llm.hf_decoding import (
    GumbelSampler,
    StopStrings,
    eos_ids,
    generated_length,
    pad_batch,
    sample_seed,
    truncate_at_stop,
)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class HFLargeLM(LargeLM):
    """A transformers model loaded lazily on the first uncached request."""

    backend = "hf"

    def __init__(
        self,
        model: str,
        cache: CallCache | None = None,
        batch_size: int = 8,
        dtype: str = "auto",
        device: str = "auto",
        device_map: str | None = None,
        max_input_tokens: int | None = None,
        trust_remote_code: bool = False,
    ):
        super().__init__(model, cache=cache, batch_size=batch_size)
        if dtype != "auto" and dtype not in DTYPES:
            raise ConfigError(f"large_lm.dtype={dtype!r}: expected auto, {', '.join(DTYPES)}")
        if max_input_tokens is not None and max_input_tokens < 1:
            raise ConfigError(
                f"large_lm.max_input_tokens={max_input_tokens}: expected >= 1 or null"
            )
        self.dtype = dtype
        self.device = device
        self.device_map = device_map
        self.max_input_tokens = max_input_tokens
        self.trust_remote_code = trust_remote_code
        self._hf_model = None
        self._tokenizer = None
        self._seq2seq = False
        self._eos_ids: list[int] = []

    def cache_identity(self) -> dict:
        # The resolved dtype, not "auto": bf16 on a GPU and fp32 on a CPU give different text.
        identity: dict = {"dtype": self.resolved_dtype()}
        if self.max_input_tokens is not None:
            identity["max_input_tokens"] = self.max_input_tokens
        return identity

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        return "cuda" if torch.cuda.is_available() else "cpu"

    def resolved_dtype(self) -> str:
        if self.dtype != "auto":
            return self.dtype
        on_cuda = self.resolved_device().startswith("cuda") or (
            self.device_map is not None and torch.cuda.is_available()
        )
        return "bfloat16" if on_cuda and torch.cuda.is_bf16_supported() else "float32"

    @property
    def exact_token_counts(self) -> bool:  # type: ignore[override]
        return self._counting_tokenizer() is not None

    def count_tokens(self, request: Request) -> int:
        """The model's own tokenizer's count where it is on disk (the model is not loaded),
        else the documented approximation."""
        tok = self._counting_tokenizer()
        if tok is None:
            return super().count_tokens(request)
        n = len(tok(_full_prompt(request))["input_ids"])
        return min(n, self.max_input_tokens) if self.max_input_tokens else n

    def _counting_tokenizer(self):
        if self._tokenizer is None and not hasattr(self, "_offline_tokenizer"):
            source = (
                str(Path(self.model).expanduser()) if _looks_like_path(self.model) else self.model
            )
            try:
                # Only what is on disk: a plan never downloads.
                self._offline_tokenizer = AutoTokenizer.from_pretrained(
                    source, trust_remote_code=self.trust_remote_code, local_files_only=True
                )
            except (OSError, ValueError, ImportError):
                self._offline_tokenizer = None
        return self._tokenizer or getattr(self, "_offline_tokenizer", None)

    @property
    def loaded(self) -> bool:
        """Whether the model has been loaded (a fully cached run never loads it)."""
        return self._hf_model is not None

    def load(self) -> None:
        """Load tokenizer and model now (otherwise done on the first uncached request)."""
        if self._hf_model is not None:
            return
        source = self.model
        if _looks_like_path(source) and not Path(source).expanduser().is_dir():
            raise BackendError(f"hf large LM: model directory not found: {source}")
        source = str(Path(source).expanduser()) if _looks_like_path(source) else source
        remote = self.trust_remote_code
        try:
            config = AutoConfig.from_pretrained(source, trust_remote_code=remote)
            tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=remote)
            seq2seq = bool(getattr(config, "is_encoder_decoder", False))
            auto_cls = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
            kwargs: dict = {"dtype": DTYPES[self.resolved_dtype()], "trust_remote_code": remote}
            if self.device_map is not None:
                kwargs["device_map"] = self.device_map
            model = auto_cls.from_pretrained(source, config=config, **kwargs)
        except (OSError, ValueError, ImportError) as err:
            raise BackendError(
                f"hf large LM: cannot load {self.model!r}: {_first_line(err)}"
            ) from err
        if self.device_map is None:
            model.to(self.resolved_device())
        model.eval()
        if not seq2seq:
            # Left padding keeps every prompt flush against its first generated token.
            tokenizer.padding_side = "left"
        tokenizer.truncation_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self._eos_ids = eos_ids(model, tokenizer)
        self._tokenizer, self._hf_model, self._seq2seq = tokenizer, model, seq2seq

    def _complete(self, requests: list[Request]) -> list[Completion]:
        self.load()
        tok = self._tokenizer
        encoded = tok(
            [_full_prompt(r) for r in requests],
            truncation=self.max_input_tokens is not None,
            max_length=self.max_input_tokens,
        )["input_ids"]
        if not self._seq2seq and any(len(ids) == 0 for ids in encoded):
            raise BackendError(
                f"hf large LM {self.model!r}: a causal model needs a non-empty prompt"
            )
        results: list[Completion | None] = [None] * len(requests)
        groups: dict[GenerationParams, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(r.params, []).append(i)
        for params, members in groups.items():
            # Longest first: similar lengths share a batch (less padding) and OOM shows up at once.
            members.sort(key=lambda i: -len(encoded[i]))
            for start in range(0, len(members), self.batch_size):
                chunk = members[start : start + self.batch_size]
                done = self._generate(
                    [requests[i] for i in chunk], [encoded[i] for i in chunk], params
                )
                for i, completion in zip(chunk, done, strict=True):
                    results[i] = completion
        return results  # type: ignore[return-value]

    def _generate(
        self, requests: list[Request], input_ids: list[list[int]], params: GenerationParams
    ) -> list[Completion]:
        tok, model = self._tokenizer, self._hf_model
        batch = pad_batch(input_ids, tok.pad_token_id, left=not self._seq2seq, device=model.device)
        # Seq2seq outputs start with the decoder start token; causal ones with the padded prompt.
        prefix = 1 if self._seq2seq else batch["input_ids"].shape[1]
        processors = LogitsProcessorList()
        if params.temperature > 0:
            processors.append(TemperatureLogitsWarper(float(params.temperature)))
            if params.top_p < 1.0:
                processors.append(TopPLogitsWarper(float(params.top_p)))
            processors.append(GumbelSampler([sample_seed(r) for r in requests]))
        stopper = StopStrings(tok, params.stop, prefix) if params.stop else None
        with torch.inference_mode():
            out = model.generate(
                **batch,
                max_new_tokens=params.max_new_tokens,
                do_sample=False,
                num_beams=1,
                pad_token_id=tok.pad_token_id,
                # Passed explicitly so generation stops exactly where the token count ends.
                eos_token_id=self._eos_ids or None,
                logits_processor=processors,
                stopping_criteria=StoppingCriteriaList([stopper] if stopper else []),
            )
        generated = out[:, prefix:].cpu().tolist()
        completions = []
        for row, tokens in enumerate(generated):
            length = generated_length(tokens, self._eos_ids)
            if stopper is not None and row in stopper.stopped_at:
                length = min(length, stopper.stopped_at[row])
            text = tok.decode(tokens[:length], skip_special_tokens=True)
            completions.append(
                Completion(truncate_at_stop(text, params.stop), len(input_ids[row]), length)
            )
        return completions


def _full_prompt(request: Request) -> str:
    system = request.params.system
    return f"{system}\n\n{request.prompt}" if system else request.prompt


def _looks_like_path(name: str) -> bool:
    return os.path.isabs(name) or name.startswith((".", "~")) or os.path.exists(name)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
