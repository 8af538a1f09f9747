"""``torchrun`` support: process-group setup from the environment (NCCL on CUDA, gloo on CPU)."""
import os
from typing import Tuple

import torch
import torch.distributed as dist


def world() -> Tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_env(device: str = "cpu") -> torch.device:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1), once; return this
    process's device (``cuda:LOCAL_RANK`` for CUDA)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = device.startswith("cuda")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if size > 1 and not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(local)
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    if cuda and size > 1:
        return torch.device("cuda", local)
    return torch.device(device)


def is_main() -> bool:
    return world()[0] == 0
