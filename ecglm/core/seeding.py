"""Seeding and deterministic PyTorch, shared by the training stages.

One seed makes a training run repeatable: :func:`seed_everything` seeds Python, NumPy and torch,
:func:`deterministic_torch` switches torch to its deterministic kernels for the duration of a run
(and restores the previous settings afterwards), and :func:`torch_generator` gives an explicit
``torch.Generator`` for each random stream (shuffling, lead dropout) so that streams do not depend
on one another or on how many DataLoader workers read the data.

On CPU a run is bit-identical for a seed and a thread count. On CUDA the deterministic setting is
requested with ``warn_only=True`` (a few kernels, e.g. the backward of adaptive pooling, have no
deterministic CUDA version), so GPU runs are repeatable up to those kernels.
"""

from __future__ import annotations

import contextlib
import os
import random
from typing import Iterator

import numpy as np

#: Mixed into every stream of this module so that the same seed gives different streams per purpose.
_STREAMS = {"shuffle": 1, "lead_dropout": 2, "subset": 3, "init": 4, "workers": 5, "bootstrap": 6, "ecg_check": 7, "eval_subset": 8, "val_subset": 9,
            "qa_answer_order": 10, "qa_shuffle": 11, "chat_dialogue": 12, "simclr_views": 13, "simclr_val_views": 14,
            "probe": 15}  # fmt: skip


def stream_seed(seed: int, purpose: str) -> int:
    """A 63-bit seed for one named random stream, a pure function of (seed, purpose)."""
    if purpose not in _STREAMS:
        raise ValueError(f"unknown random stream {purpose!r} (expected one of {', '.join(_STREAMS)})")
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, _STREAMS[purpose]]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & 0x7FFFFFFFFFFFFFFF


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch's default generator(s)."""
    import torch

    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    torch.manual_seed(seed)


def torch_generator(seed: int, purpose: str):
    """A CPU ``torch.Generator`` seeded for one named stream (see :func:`stream_seed`)."""
    import torch

    gen = torch.Generator()
    gen.manual_seed(stream_seed(seed, purpose))
    return gen


def numpy_rng(seed: int, purpose: str) -> np.random.Generator:
    """A NumPy generator for one named stream (see :func:`stream_seed`)."""
    return np.random.default_rng(stream_seed(seed, purpose))


def worker_init_fn(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed NumPy and ``random`` in a worker from torch's per-worker seed.

    torch derives each worker's seed from the DataLoader's (seeded) generator, so this makes any
    NumPy or ``random`` use inside a Dataset repeatable too.
    """
    import torch

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


@contextlib.contextmanager
def deterministic_torch(cuda: bool = False) -> Iterator[None]:
    """Use torch's deterministic algorithms inside the block; restore the previous settings after it.

    ``cuda=True`` also sets ``CUBLAS_WORKSPACE_CONFIG`` (needed by deterministic cuBLAS; it must be
    set before the first cuBLAS call) and only warns where no deterministic kernel exists.
    """
    import torch

    was_on = torch.are_deterministic_algorithms_enabled()
    was_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    was_benchmark = torch.backends.cudnn.benchmark
    was_cudnn_det = torch.backends.cudnn.deterministic
    if cuda:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=cuda)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was_on, warn_only=was_warn)
        torch.backends.cudnn.benchmark = was_benchmark
        torch.backends.cudnn.deterministic = was_cudnn_det
