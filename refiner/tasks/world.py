"""A world: what the pipeline needs to know about where the images come from (digits, gaze,
your own folders). It says what its labels are (a pyarrow schema, so the dataset contract
stores them), how it makes labelled synthetic images and reads real ones, which rows it
cannot use, and which head learns its labels (``refiner.tasks.heads``). The stages and the
library call a world's methods and never its name.

A new world is one module or package in ``refiner/tasks/`` defining ``WORLD`` (a ``World``
subclass) and, if it has settings, one params.yaml section named after it (its ``Params``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pyarrow as pa

from refiner.config import Section
from refiner.tasks.heads import Head


@dataclass
class Images:
    """Images a world made or read: float32 N x H x W (grayscale) or N x H x W x 3 (RGB) in
    [0, 1], with ids and label columns (``labels`` is None where the source has no labels)."""
    ids: np.ndarray
    pixels: np.ndarray
    labels: dict[str, np.ndarray] | None = None

    def take(self, index: np.ndarray) -> Images:
        labels = None if self.labels is None else {k: np.asarray(v)[index] for k, v in self.labels.items()}
        return Images(np.asarray(self.ids)[index], self.pixels[index], labels)


class World:
    """The contract. A subclass sets ``name`` (and ``Params``), the instance's ``labels`` and
    ``head``, and implements ``synthesize`` and ``read_real``; the rest has defaults. It is
    built once per process from the params (``refiner.tasks.task_for``): a world whose labels
    come from the user's data (images) reads their kinds in ``__init__``."""
    name: ClassVar[str]
    Params: ClassVar[type[Section]] = Section  # its params.yaml section, named ``name`` (may be empty: {})
    labels: pa.Schema                          # label columns and their pyarrow types
    head: Head | None                          # what learns the labels; None: no estimator fits them

    def __init__(self, params) -> None:
        """A fixed world needs nothing from the params to know its labels."""

    @property
    def state(self) -> dict:
        """What the world derived from the data (JSON-able), saved with each estimator."""
        return {}

    @property
    def test_labels(self) -> pa.Schema:
        """The label columns a real test set must have: those the head learns."""
        names = self.head.columns if self.head is not None else self.labels.names
        return pa.schema([self.labels.field(name) for name in names])

    def synthesize(self, params) -> Images:
        """``params.render.num_images`` labelled synthetic images, seeded by ``params.seed``."""
        raise NotImplementedError

    def read_real(self, params) -> tuple[Images, Images | None]:
        """(unlabelled pool, labelled test split) of the real images; the test is None where
        ``has_real_test`` says there is none. The pool may carry its labels where the source
        has them: ingest stores them apart, for evaluate's oracle only."""
        raise NotImplementedError

    def has_real_test(self, params) -> bool:
        """Whether the real images come with a labelled test set (else evaluate reports the
        label-free figures only)."""
        return True

    def bad_labels(self, labels: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Rows whose labels the world cannot train or score on: {problem: mask of rows}.
        Every dataset check already refuses missing, NaN and infinite labels."""
        return self.head.bad_labels(labels) if self.head is not None else {}


def read_summary(source: str, num_read: int, skipped: list[tuple[str, str]], shown: int = 20) -> str:
    """What a reader of external data read and what it skipped, and why (the first ``shown``)."""
    lines = [f"{source}: read {num_read} images, skipped {len(skipped)}"]
    lines += [f"  skipped {what}: {why}" for what, why in skipped[:shown]]
    if len(skipped) > shown:
        lines.append(f"  ... and {len(skipped) - shown} more")
    return "\n".join(lines)
