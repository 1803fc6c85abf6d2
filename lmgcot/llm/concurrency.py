"""Running async SDK calls from synchronous code: a bounded number in flight, results in order."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def run_settled(
    make_client: Callable[[], Any],
    call: Callable[[Any, T], Awaitable[R]],
    items: Sequence[T],
    max_concurrency: int,
    fatal: Callable[[BaseException], bool],
    catch: tuple[type[BaseException], ...],
) -> list[R | BaseException]:
    """`call(client, item)` for every item, at most `max_concurrency` at once: per item its result
    or the error (of type `catch`) it ended with, in order. One request's failure leaves the others
    running; only an error for which `fatal(err)` holds (or one not in `catch`) cancels the rest
    and is raised."""

    async def main() -> list[R | BaseException]:
        gate = asyncio.Semaphore(max_concurrency)
        stopped: list[BaseException] = []
        async with make_client() as client:

            async def one(item: T) -> R | BaseException:
                async with gate:
                    if stopped:  # a fatal error came first: this request is not sent
                        raise stopped[0]
                    try:
                        return await call(client, item)
                    except catch as err:
                        if fatal(err):
                            stopped.append(err)
                            raise
                        return err

            tasks = [asyncio.ensure_future(one(item)) for item in items]
            try:
                return list(await asyncio.gather(*tasks))
            except BaseException:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise

    return run_async(main())


def run_async(coro: Coroutine[Any, Any, R]) -> R:
    """Run a coroutine to completion from synchronous code."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # Called from inside a running loop (a notebook): asyncio.run needs a thread of its own.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()
