"""torch.distributed set-up from the torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> DistInfo:
    """Join the process group torchrun describes (NCCL on GPUs, gloo on CPU); one process otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo", device_id=device if device.type == "cuda" else None
        )
    return DistInfo(rank, local_rank, world_size, device)


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def any_rank(flags: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Element-wise OR of an integer flag vector over ranks."""
    if info.distributed:
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return flags


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_ok(ok: bool, info: DistInfo) -> bool:
    """True when ``ok`` holds on every rank (an all-reduce under DDP, so all ranks fail together)."""
    if not info.distributed:
        return ok
    flag = torch.tensor([int(ok)], device=info.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


PEER_SIGNS = ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "gloo", "NCCL", "ProcessGroup")


def peer_failure(err: BaseException) -> str | None:
    """A short reason when ``err`` is a collective that failed because another process died or lost its
    connection (gloo / NCCL errors), else None."""
    text = str(err)
    if not (isinstance(err, dist.DistError) or (isinstance(err, RuntimeError) and any(s in text for s in PEER_SIGNS))):
        return None
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    first = re.sub(r"^\[[^\]]*\]\s*", "", first)  # the C++ source location gloo puts first
    return first.split(". ", 1)[0][:200]
