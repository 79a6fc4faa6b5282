"""Which process does what in a multi-process (DDP) run.

Lightning starts the other ranks of a run by running the same command again (``sermo run ...``
with ``LOCAL_RANK``, ``NODE_RANK`` and ``WORLD_SIZE`` set), and ``torchrun`` starts every rank
with ``RANK`` set; the process group itself exists only from the first ``trainer.fit`` on. So
whether this process is the one that writes is asked of the process group when there is one,
else of those variables.
"""

from __future__ import annotations

import contextlib
import os

import torch


def world() -> tuple[int, int]:
    """``(world size, global rank)`` of the process group, ``(1, 0)`` outside one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


def launched_rank() -> int:
    """The global rank a launcher gave this process (0 when none did): ``RANK`` (torchrun), else
    Lightning's ``NODE_RANK`` and ``LOCAL_RANK`` (any non-zero one makes a non-zero rank)."""
    if os.environ.get("RANK", "").isdigit():
        return int(os.environ["RANK"])
    node, local = (int(os.environ.get(k, "0")) if os.environ.get(k, "0").isdigit() else 0
                   for k in ("NODE_RANK", "LOCAL_RANK"))
    return node * 1_000 + local  # only whether it is 0 matters


def is_rank_zero() -> bool:
    """True in the process that writes results: global rank 0, or a run without ranks."""
    size, rank = world()
    if size > 1:
        return rank == 0
    return launched_rank() == 0


def barrier() -> None:
    """Wait for every rank (nothing outside a process group)."""
    if world()[0] > 1:
        torch.distributed.barrier()


@contextlib.contextmanager
def rank_zero_first():
    """Rank 0 runs the block first; the other ranks wait, then run it themselves (finding what
    rank 0 cached: transcripts, alignments, a continued checkpoint). Outside a process group the
    block just runs."""
    size, rank = world()
    if size > 1 and rank != 0:
        torch.distributed.barrier()
    yield
    if size > 1 and rank == 0:
        torch.distributed.barrier()
