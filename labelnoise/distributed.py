"""Process-group setup from torchrun's environment, and the few collectives training needs.

torchrun sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` (and the rendezvous
address); plain ``python`` sets none of them and gives one process without a
process group, so the same script runs both ways. NCCL on CUDA, gloo on CPU.
Under torchrun a process group is made even for one process, so
``torchrun --nproc_per_node=1`` runs DDP and the collectives of a real job
(on one GPU: NCCL). Also the log format every script of a job shares
(``setup_logging(env_rank())``): one line per message, tagged with the rank.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)
# Set by torchrun (torch.distributed.run) in every process it starts.
LAUNCHER_ENV = "TORCHELASTIC_RUN_ID"


@dataclass(frozen=True)
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    grouped: bool = False  # a process group exists (always under torchrun)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """Whether training goes through DDP and the collectives."""
        return self.world_size > 1 or self.grouped


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def env_rank() -> int:
    """This process's rank as torchrun set it (0 under plain ``python``), before any process group."""
    return _env_int("RANK", 0)


def setup_logging(rank: int) -> None:
    """INFO from rank 0, only warnings and errors from the others; each line names its rank."""
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s")


def setup(device: str | None = None) -> DistInfo:
    """Join the process group torchrun describes (if any) and pick this process's device.

    ``device``: ``"cpu"`` forces the CPU; None takes CUDA when available.
    """
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    world_size = _env_int("WORLD_SIZE", 1)
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if use_cuda:
        # Before init_process_group, so NCCL binds this process to its own GPU.
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if (world_size > 1 or LAUNCHER_ENV in os.environ) and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", init_method="env://",
                                rank=rank, world_size=world_size,
                                device_id=dev if use_cuda else None)
        if rank == 0:
            log.info("process group: %s, %d process(es)", dist.get_backend(), world_size)
    return DistInfo(rank, local_rank, world_size, dev, grouped=dist.is_available() and dist.is_initialized())


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In place across ranks (a no-op in one process); ``op`` is ``sum`` or ``max``."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op])
    return tensor


def gather_objects(obj) -> list:
    """Every rank's ``obj``, in rank order (on every rank); ``[obj]`` in one process."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
