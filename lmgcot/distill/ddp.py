"""DDP with worker processes spawned from the running process (`trainer=ddp`).

Lightning's `ddp_spawn` leaves each worker's process group alive when the worker returns: its exit
handler that would destroy it does not run in a multiprocessing child, and gloo's threads then abort
the worker now and then at exit ("terminate called without an active exception"), failing the run.
This strategy destroys the group in the worker once its results are handed back.
"""

from __future__ import annotations

from typing import Any

import torch.distributed as dist
from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.strategies.launchers.multiprocessing import _MultiProcessingLauncher


class _CleanExitLauncher(_MultiProcessingLauncher):
    def _wrapping_function(self, *args: Any, **kwargs: Any) -> None:
        try:
            super()._wrapping_function(*args, **kwargs)
        finally:
            if dist.is_available() and dist.is_initialized():
                dist.destroy_process_group()


class SpawnDDPStrategy(DDPStrategy):
    """`DDPStrategy(start_method="spawn")` whose workers leave cleanly."""

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("start_method", "spawn")
        super().__init__(**kwargs)

    def _configure_launcher(self) -> None:
        self._launcher = _CleanExitLauncher(self, start_method=self._start_method)
