"""Data-parallel training on torch.distributed, as launched by `torchrun` (one process per GPU or CPU slot).

    torchrun --nproc_per_node=4 -m ddad train --config configs/mvtec/paper.yaml --out runs/bottle

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; `init()` joins the process group (NCCL on
CUDA, gloo on CPU) and pins each process to its GPU. Without those variables everything runs in one process
exactly as before. How the training loop uses it (ddad.diffusion.train.train_model): every rank draws the same
global batch and the same noise from the (seed, step) generators and works on its own contiguous shard of it, the
gradients are averaged by DistributedDataParallel, so k steps on N processes at global batch B give the weights of k
steps in one process at batch B (up to the order of the float sums); rank 0 alone writes checkpoints and models.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["World", "init", "world", "shard", "barrier", "mean_across", "is_main", "gather_lists"]


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init(device: str = "cpu") -> World:
    """Join the process group torchrun describes in the environment (once); a single process otherwise."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size > 1 and not dist.is_initialized():
        cuda = str(device).startswith("cuda")
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
    return world()


def world() -> World:
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))


def is_main() -> bool:
    return world().main


def shard(batch_size: int, w: World | None = None) -> slice:
    """This rank's contiguous part of a global batch; the batch must split evenly."""
    w = w or world()
    if batch_size % w.size:
        raise ValueError(f"train.batch_size {batch_size} is the global batch: it must be divisible by the "
                         f"{w.size} processes (e.g. {batch_size - batch_size % w.size or w.size})")
    n = batch_size // w.size
    return slice(w.rank * n, (w.rank + 1) * n)


def barrier() -> None:
    if world().size > 1:
        dist.barrier()


def mean_across(x: torch.Tensor) -> torch.Tensor:
    """The mean of a tensor over all ranks (itself in one process)."""
    if world().size == 1:
        return x
    y = x.detach().clone()
    dist.all_reduce(y)
    return y / world().size


def gather_lists(items: list) -> list:
    """Every rank's list (picklable items), concatenated in rank order, on every rank (the list itself in one
    process). Used to merge the predictions of a sharded `ddad predict`."""
    if world().size == 1:
        return list(items)
    parts: list = [None] * world().size
    dist.all_gather_object(parts, items)
    return [x for p in parts for x in p]
