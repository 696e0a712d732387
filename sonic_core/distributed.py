"""Several devices on one clip: the ranks of a ``torch.distributed`` run and the one collective the sampler needs.

Each sampler step's window groups are dealt round-robin over the ranks (group ``g`` runs on rank ``g % world``); every
rank adds its windows' Euler results into its own ``summed``/``counts`` and one all-reduce (SUM) per step gives every
rank the sums of all windows, so all ranks average to the same latents and the next step starts from them. NCCL joins
CUDA devices, gloo the CPU. A process joins from the environment ``torchrun`` (or the CLI's ``--devices`` launcher)
sets: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import SonicRankLost

RANK_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class RankGroup:
    """This process's place in a run over ``world_size`` devices, and the sum across them."""

    rank: int
    world_size: int

    @property
    def leads(self) -> bool:
        """Rank 0 decodes, interpolates and writes the video; the others only sample."""
        return self.rank == 0

    def owns(self, group: int) -> bool:
        """Whether window group ``group`` of a step runs on this rank."""
        return group % self.world_size == self.rank

    def share(self, groups: int) -> int:
        """How many of a step's ``groups`` window groups this rank runs."""
        return len(range(self.rank, groups, self.world_size))

    def sum_(self, *tensors: torch.Tensor) -> None:
        """Replace each tensor by its sum over all ranks, in place (NCCL sums on the device: a tensor in host memory,
        such as the memory planner's latents on the host, makes the trip there and back). A rank that died or left ends the run here with
        :class:`SonicRankLost` instead of a backend traceback."""
        for tensor in tensors:
            try:
                if tensor.device.type == "cpu" and dist.get_backend() == "nccl":  # sums kept in host memory
                    on_device = tensor.to(torch.cuda.current_device())
                    dist.all_reduce(on_device, op=dist.ReduceOp.SUM)
                    tensor.copy_(on_device)
                else:
                    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
            except (RuntimeError, dist.DistError) as exc:
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise SonicRankLost(f"rank {self.rank}: another rank stopped during the all-reduce ({reason})") \
                    from None


def rank_environment() -> tuple[int, int, int] | None:
    """``(rank, world size, local rank)`` when this process was started as one rank of several, else None."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) < 2:
        return None
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0"))


def backend(device: torch.device) -> str:
    """NCCL for CUDA devices, gloo for the CPU."""
    return "nccl" if device.type == "cuda" else "gloo"


def join(device: torch.device) -> RankGroup:
    """Join the run described by the environment (see :func:`rank_environment`) on ``device``."""
    rank, world, _ = rank_environment() or (0, 1, 0)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend(device), init_method="env://", rank=rank, world_size=world)
    return RankGroup(rank, world)


def leave() -> None:
    """Leave the run (a no-op when none was joined)."""
    if dist.is_initialized():
        dist.destroy_process_group()
