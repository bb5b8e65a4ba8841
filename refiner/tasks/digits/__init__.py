"""The digits task (the embedded default): font and pen-stroke digits rendered the way UCI
optdigits preprocessed its scans (``renderer``), refined towards scikit-learn's bundled real
handwritten digits (1797 of them: real data nobody here made), 10-way classification.
``digits.real: mnist`` swaps in a second real source (5000 MNIST digits in optdigits' format)
that checks label-free choices on data they were not designed on; a ``.npz`` path, your own."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from pydantic import Field, field_validator

from refiner import data
from refiner.config import Section
from refiner.tasks.digits.renderer import (NUM_CLASSES, RenderJitter, counts_to_unit, load_digit_file,
                                           load_mnist_digits, load_real_digits, render_digits)
from refiner.tasks.heads import ClassificationHead
from refiner.tasks.world import Images, World

REAL_SOURCES = {"optdigits": load_real_digits, "mnist": load_mnist_digits}


class DigitsParams(Section):
    handwritten_fraction: float = Field(0.5, ge=0, le=1, description=(
        "share drawn as pen strokes along digit skeletons; the rest are font glyphs"))
    jitter: RenderJitter = Field(default_factory=RenderJitter, description="how much each rendered digit varies")
    real: str = Field("optdigits", description=(
        "the real digits: scikit-learn's optdigits (1797), mnist (5000 MNIST digits in optdigits' format), "
        "or a .npz of your own labelled scans ('images' N x H x W uint8, ink bright; 'labels' 0..9)"))

    @field_validator("real")
    @classmethod
    def _known_source(cls, real: str) -> str:
        if real not in REAL_SOURCES and not real.endswith(".npz"):
            raise ValueError(f"'{real}' is neither one of {sorted(REAL_SOURCES)} nor a .npz file")
        return real


class Digits(World):
    name = "digits"
    Params = DigitsParams
    labels = pa.schema([data.class_field("label", NUM_CLASSES)])

    def __init__(self, params):
        self.head = ClassificationHead(NUM_CLASSES)

    def synthesize(self, params):
        ids, counts, labels = render_digits(params.render.num_images, params.seed, params.digits.jitter,
                                            handwritten_fraction=params.digits.handwritten_fraction)
        return Images(ids, counts_to_unit(counts), {"label": labels})

    def read_real(self, params):
        """The real digits (``digits.real``), split stratified by class and seeded."""
        from sklearn.model_selection import train_test_split  # here: scikit-learn costs every stage ~1 s to import
        source = params.digits.real
        ids, counts, labels = REAL_SOURCES[source]() if source in REAL_SOURCES else load_digit_file(source)
        real = Images(ids, counts_to_unit(counts), {"label": labels})
        pool, test = train_test_split(np.arange(len(ids)), test_size=params.ingest.test_fraction, stratify=labels,
                                      random_state=params.seed)
        return real.take(np.sort(pool)), real.take(np.sort(test))


WORLD = Digits
