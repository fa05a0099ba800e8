"""The runtime that every training and scoring loop shares: the device, bf16 autocast and torch's CPU threads.

One of each, so that the encoder pretraining, the demo LLM, the alignment and the evaluation resolve a
device, cast and pin their threads the same way.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Iterator

from ecglm.core.errors import StageError

if TYPE_CHECKING:  # torch is imported inside the functions (a fast `ecglm --help`)
    import torch


def resolve_device(name: str) -> "torch.device":
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``; StageError when CUDA is asked for but absent."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise StageError(f"device {name!r}: torch sees no CUDA GPU (use device=auto or cpu)")
    return torch.device(name)


def autocast(device: Any, amp: bool):
    """bf16 autocast on CUDA when ``amp``; a no-op context on the CPU (float32 there)."""
    import torch

    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda")


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch CPU threads (None: leave them), then restore the previous number."""
    import torch

    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
