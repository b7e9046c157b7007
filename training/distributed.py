"""Data-parallel training under ``torchrun``: one process per device, gradients averaged by DDP.

``torchrun --standalone --nproc-per-node N -m training FAMILY ...`` starts N copies of the normal
command; torchrun's environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``)
tells each which shard it is. Without torchrun (``WORLD_SIZE`` unset or 1) nothing here does
anything and training runs in one process as before.

- Backend: NCCL on CUDA (device ``cuda:LOCAL_RANK``), gloo on CPU.
- ``--batch-size`` stays the global batch: each process takes ``batch_size / N``, so the optimiser
  steps, the schedule and the recipe's learning rate are those of one process.
- Training batches come from a ``DistributedSampler``; validation and test are split into disjoint
  shards whose sums are all-reduced, so every process sees the same metric (early stopping and
  ReduceLROnPlateau decide alike everywhere).
- Rank 0 alone prints, writes TensorBoard logs, checkpoints and metrics.json; checkpoints hold the
  unwrapped module's state_dict, the same format as a one-process run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


class DistributedError(RuntimeError):
    """A torchrun launch that cannot work as asked (the message says what to change)."""


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


def world() -> World:
    """This process's place in the job (one-process defaults when not under torchrun)."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)),
                 int(os.environ.get("LOCAL_WORLD_SIZE", dist.get_world_size())))


def launched_size() -> int:
    """WORLD_SIZE as torchrun set it (1 without torchrun)."""
    raw = os.environ.get("WORLD_SIZE", "1")
    try:
        return int(raw)
    except ValueError:
        raise DistributedError(f"WORLD_SIZE={raw!r} is not an integer (start several processes with torchrun)") from None


def init(device: torch.device) -> torch.device:
    """Join the torchrun job when there is one; returns this process's device."""
    size = launched_size()
    if size <= 1 or dist.is_initialized():
        return device
    if device.type == "cuda":
        local_rank = int(os.environ["LOCAL_RANK"])
        if local_rank >= torch.cuda.device_count():
            raise DistributedError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA devices; "
                                   f"use --nproc-per-node <= {torch.cuda.device_count()}")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise DistributedError(f"--device {device.type}: torchrun training supports cuda (NCCL) and cpu (gloo)")
    dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
    return device


def per_process_batch(batch_size: int) -> int:
    """Each process's share of the global ``--batch-size``."""
    w = world()
    if batch_size % w.size:
        raise DistributedError(f"--batch-size {batch_size} is the global batch and must divide by the "
                               f"{w.size} processes (try {batch_size - batch_size % w.size or w.size})")
    return batch_size // w.size


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """DDP around ``model`` in a torchrun job (rank 0's weights are broadcast); the model itself otherwise."""
    if not world().active:
        return model
    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def unwrap(model: nn.Module) -> nn.Module:
    """The module DDP wraps, whose state_dict keys have no ``module.`` prefix."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def all_reduce_sums(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over every process (unchanged in one process)."""
    if not world().active:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def barrier() -> None:
    if world().active:
        dist.barrier()


def shutdown() -> None:
    """Leave the job (a no-op without torchrun)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
