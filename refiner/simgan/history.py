"""The paper's history of refined images (Sec. 2.3).

The discriminator sees, in each fake batch, half current refiner output and half images
refined earlier, so the refiner cannot re-introduce artifacts D has forgotten. The buffer
keeps a fixed number of past refined images (and, for a class-conditional discriminator,
their classes); once full, each push overwrites random entries. Implementations that only ever sampled from an
empty buffer existed in public ports: tests check this one fills and returns old images.
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
        self.classes: torch.Tensor | None = None  # one per image when pushed with classes
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def push(self, images: torch.Tensor, classes: torch.Tensor | None = None) -> None:
        images = images.detach().to("cpu", copy=True)
        if self.images is None:
            self.images = torch.empty((self.capacity, *images.shape[1:]), dtype=images.dtype)
            if classes is not None:
                self.classes = torch.empty(self.capacity, dtype=torch.int64)
        free = self.capacity - self.size
        take = min(free, len(images))
        slots = torch.arange(self.size, self.size + take)
        self.size += take
        if len(images) > take:  # full: overwrite random slots
            slots = torch.cat([slots, torch.randperm(self.capacity, generator=self.generator)[:len(images) - take]])
        self.images[slots] = images[:len(slots)]
        if self.classes is not None:
            self.classes[slots] = classes[:len(slots)].cpu()

    def sample(self, count: int) -> torch.Tensor:
        return self.sample_with_classes(count)[0]

    def sample_with_classes(self, count: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.size == 0:
            raise ValueError("history buffer is empty")
        index = torch.randint(self.size, (count,), generator=self.generator)
        return self.images[index], None if self.classes is None else self.classes[index]

    def mix(self, refined: torch.Tensor, classes: torch.Tensor | None = None):
        """The fake batch for D: half from history (once it holds any), half current; then
        half of the current batch goes into the history. With ``classes`` (one per refined
        image) returns (batch, their classes), else the batch."""
        half = len(refined) // 2
        current = refined.detach()
        batch, batch_classes = current, classes
        if self.size:
            past, past_classes = self.sample_with_classes(half)
            batch = torch.cat([current[: len(refined) - half], past.to(refined.device)])
            if classes is not None:
                batch_classes = torch.cat([classes[: len(refined) - half], past_classes.to(classes.device)])
        keep = torch.randperm(len(current), generator=self.generator)[:max(half, 1)]
        self.push(current[keep], None if classes is None else classes[keep])
        return batch if classes is None else (batch, batch_classes)
