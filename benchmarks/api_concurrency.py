"""Wall time of large-LM calls at several concurrency limits, run by hand.

    python benchmarks/api_concurrency.py [--calls 64] [--latency 0.1]

The real `anthropic` and `openai` clients talk to the tests' local fake API server (tests/
fake_api_server.py), which answers every request after `--latency` seconds; the figure to look at is
the speed-up over concurrency 1, measured in one process so machine noise cancels out.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fake_api_server import FakeApiServer  # noqa: E402

from lmgcot.llm.anthropic import AnthropicLargeLM  # noqa: E402
from lmgcot.llm.base import GenerationParams  # noqa: E402
from lmgcot.llm.openai import OpenAILargeLM  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=64)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16, 64])
    args = ap.parse_args()
    os.environ.setdefault("ANTHROPIC_API_KEY", "sk-ant-benchmark-not-a-key")
    params = GenerationParams(max_new_tokens=16)
    with FakeApiServer(latency_s=args.latency) as server:
        for backend in ("anthropic", "openai"):
            base = None
            for level in args.levels:
                server.reset()
                if backend == "anthropic":
                    lm = AnthropicLargeLM(
                        "claude-test", base_url=server.url, max_concurrency=level, batch_size=4096
                    )
                else:
                    lm = OpenAILargeLM(
                        "served",
                        base_url=f"{server.url}/v1",
                        max_concurrency=level,
                        batch_size=4096,
                    )
                # A distinct prompt set per run: nothing is cached in memory either way.
                prompts = [f"{backend} {level} prompt {i}" for i in range(args.calls)]
                t0 = time.perf_counter()
                lm.generate(prompts, params)
                wall = time.perf_counter() - t0
                base = base or wall
                print(
                    f"{backend:9s} concurrency {level:3d}: {args.calls} calls in {wall:6.2f} s "
                    f"({args.calls / wall:6.1f} calls/s, {base / wall:5.1f}x concurrency 1, "
                    f"max in flight {server.max_in_flight})"
                )


if __name__ == "__main__":
    main()
