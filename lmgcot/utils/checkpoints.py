"""Lightning checkpoints written whole or not at all.

Lightning's own save goes through an fsspec transaction whose temporary file lives in the system
temp directory: committing it is a copy across file systems, so a full disk or a kill mid-copy
leaves a truncated best.ckpt/last.ckpt where resume looks (and ModelCheckpoint then writes
best-v1.ckpt beside it). Here the temporary file sits beside the target and `os.replace` puts it in
place, which is atomic on one file system.
"""

from __future__ import annotations

from typing import Any

import torch
from pytorch_lightning.plugins import TorchCheckpointIO

from lmgcot.utils.io import atomic_file


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO for local paths: temp file beside the target, fsync, rename."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        with atomic_file(path, "wb") as f:
            torch.save(checkpoint, f)
