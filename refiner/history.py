"""The paper's history of refined images (Sec. 2.3).

The discriminator sees, in each fake batch, half current refiner output and half images
refined earlier, so the refiner cannot re-introduce artifacts D has forgotten. The buffer
keeps a fixed number of past refined images; once full, each push overwrites random
entries. Implementations that only ever sampled from an empty buffer existed in public
ports: tests check this one fills and returns old images.
"""

from __future__ import annotations

import torch


class HistoryBuffer:
    def __init__(self, capacity: int, generator: torch.Generator | None = None):
        if capacity <= 0:
            raise ValueError(f"history buffer capacity must be positive, got {capacity}")
        self.capacity = capacity
        self.generator = generator or torch.Generator().manual_seed(0)
        self.images: torch.Tensor | None = None
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def push(self, images: torch.Tensor) -> None:
        images = images.detach().to("cpu", copy=True)
        if self.images is None:
            self.images = torch.empty((self.capacity, *images.shape[1:]), dtype=images.dtype)
        free = self.capacity - self.size
        take = min(free, len(images))
        self.images[self.size:self.size + take] = images[:take]
        self.size += take
        rest = images[take:]
        if len(rest):  # full: overwrite random slots
            slots = torch.randperm(self.capacity, generator=self.generator)[:len(rest)]
            self.images[slots] = rest[:len(slots)]

    def sample(self, count: int) -> torch.Tensor:
        if self.size == 0:
            raise ValueError("history buffer is empty")
        index = torch.randint(self.size, (count,), generator=self.generator)
        return self.images[index]

    def mix(self, refined: torch.Tensor) -> torch.Tensor:
        """The fake batch for D: half from history (once it holds any), half current; then
        half of the current batch goes into the history."""
        half = len(refined) // 2
        current = refined.detach()
        if self.size:
            past = self.sample(half).to(refined.device)
            batch = torch.cat([current[: len(refined) - half], past])
        else:
            batch = current
        self.push(current[torch.randperm(len(current), generator=self.generator)[:max(half, 1)]])
        return batch
