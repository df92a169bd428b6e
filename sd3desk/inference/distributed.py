"""One batch over several processes (GPUs, machines): the rank and world size the launcher set
(`torchrun`, `accelerate launch`, Slurm's `srun`), and a barrier through torch.distributed as
accelerate sets it up (gloo on the CPU, NCCL on CUDA). One process needs none of it: torch is
imported only when there are several."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


def _env_int(*names: str) -> int | None:
    for name in names:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return None


@dataclass
class Ranks:
    """This process's place among the processes of one batch."""

    rank: int = 0
    world: int = 1
    local: int = 0  # the process's index on its machine: the CUDA device it runs on
    _state: Any = None

    @classmethod
    def from_env(cls) -> Ranks:
        """From torchrun/accelerate (RANK, WORLD_SIZE, LOCAL_RANK) or Slurm (SLURM_PROCID,
        SLURM_NTASKS, SLURM_LOCALID); with several processes the process group is set up by
        accelerate (its MASTER_ADDR/MASTER_PORT, as the launcher set them)."""
        world = _env_int("WORLD_SIZE", "SLURM_NTASKS") or 1
        if world <= 1:
            return cls()
        local = _env_int("LOCAL_RANK", "SLURM_LOCALID") or 0
        if "RANK" not in os.environ and "SLURM_PROCID" in os.environ:  # srun: as torchrun does
            os.environ["RANK"], os.environ["WORLD_SIZE"] = os.environ["SLURM_PROCID"], str(world)
            os.environ["LOCAL_RANK"] = str(local)
        import torch
        from accelerate import PartialState

        # (without cpu=True accelerate sets up no process group on a machine with no GPU)
        state = PartialState(cpu=not torch.cuda.is_available())
        return cls(state.process_index, state.num_processes, state.local_process_index, state)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mine(self, index: int) -> bool:
        """Whether job `index` of the batch is this process's (every world-th, from its rank)."""
        return index % self.world == self.rank

    def wait_for_everyone(self) -> None:
        if self._state is not None:
            self._state.wait_for_everyone()

    def close(self) -> None:
        if self._state is not None:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
