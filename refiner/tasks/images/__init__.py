"""The images task: the user's own simulator and camera, with no code to write.

Synthetic: a folder of images plus a labels file (CSV, JSON Lines or Parquet, one row per
image, keyed by its path in the folder), or a Parquet / Hugging Face ``datasets`` directory
with an ``image`` column. Real: a folder of unlabelled camera images, plus a labelled real
test set for ``evaluate`` in the same formats as synthetic. Grayscale or RGB, any size: one
size and colour mode for all (``size``, ``fit``, ``color``); keypoints, boxes and masks move
with the resize or crop (``readers``).

The label kinds are inferred from the labels file and printed (pin them in
``images.label_kinds``), and choose the head: every float-valued column (float, vector,
keypoints, box) regressed jointly, or, with none, one class column classified; with neither
(masks only, or ``target: []``) no estimator, and evaluate reports label-free figures.
``simrefinery init`` (``refiner.cli``) writes this section from folders.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, field_validator

from refiner import data
from refiner.config import Section
from refiner.errors import ParamsError
from refiner.tasks.heads import ClassificationHead, Head, RegressionHead
from refiner.tasks.images import readers
from refiner.tasks.world import Images, World


class ImagesParams(Section):
    synthetic: str | None = Field(None, description=(
        "the simulator's labelled images: a folder (with labels), a Parquet dataset (directory or file) "
        "or a Hugging Face datasets directory, with an 'image' column"))
    labels: str | None = Field(None, description="labels of a synthetic folder: .csv, .jsonl or .parquet, one row per image")
    real: str | None = Field(None, description="a folder of unlabelled camera images (recursive: png, jpg, webp)")
    test: str | None = Field(None, description="the labelled real test set for evaluate: a folder (with test_labels) or a table directory")
    test_labels: str | None = Field(None, description="labels of a test folder, in the synthetic labels' format")
    key: str = Field("file", description="the labels' column naming each row's image, a path relative to its folder")
    label_kinds: dict[str, str] | None = Field(None, description=(
        "label column -> class, float, vector[K], keypoints[K] (x,y pixel pairs), box (x0,y0,x1,y1 pixels) "
        "or mask (a mask image's file name); null: inferred from the labels and printed"))
    target: list[str] | None = Field(None, description=(
        "the columns the estimator learns; null: every float-valued column, else the one class column"))
    num_classes: int | None = Field(None, gt=1, description="classes of a class target; null: the synthetic labels' largest + 1")
    size: tuple[int, int] | None = Field(None, description="[height, width] every image is made; null: the first synthetic image's")
    fit: Literal["resize", "crop"] = Field("resize", description=(
        "resize: stretch to size; crop: centre-crop to size's aspect ratio, then resize"))
    color: Literal["rgb", "gray"] = Field("rgb", description="RGB or 8-bit grayscale through the whole pipeline")

    @field_validator("label_kinds")
    @classmethod
    def _known_kinds(cls, kinds):
        for kind in (kinds or {}).values():
            readers.kind_length(kind)  # a ValueError naming the kind
        return kinds


def _path(value: str | None, key: str) -> Path:
    if not value:
        raise ParamsError(f"images.{key}: not set (`simrefinery init --help` writes this section)")
    return Path(value)


class ImagesWorld(World):
    """The user's folders. Built once per process: reads the synthetic labels table (not the
    images) for the kinds unless pinned, the class count unless pinned, and the regression
    targets' scale; ``state`` (JSON-able) is saved with each estimator."""
    name = "images"
    Params = ImagesParams

    def __init__(self, params):
        section = params.images
        frame = _label_frame(section)
        if section.label_kinds:
            kinds = dict(section.label_kinds)
        else:
            kinds = readers.infer_kinds(frame, section.key if section.labels else "file", section.labels or section.synthetic)
            print(f"images: label kinds inferred from the synthetic labels: {kinds} (pin them in images.label_kinds)")
        target = section.target if section.target is not None else _auto_target(kinds)
        unknown = [name for name in target if name not in kinds]
        if unknown:
            raise ParamsError(f"images.target: {unknown} are not label columns ({sorted(kinds)})")
        self.kinds, self.preprocess = kinds, readers.Preprocess(tuple(section.size) if section.size else None,
                                                                  section.fit, section.color)
        self.labels = pa.schema([(name, readers.arrow_type(kind)) for name, kind in kinds.items()])
        self._state = {"label_kinds": kinds, "target": target, "num_classes": section.num_classes}
        self.head = self._head(section, frame, target)
        if self.head is not None and self.head.has_classes:  # the target's classes travel with its column
            column = self.head.columns[0]
            self.labels = self.labels.set(self.labels.get_field_index(column),
                                          data.class_field(column, self.head.num_classes))

    def _head(self, section, frame, target: list[str]) -> Head | None:
        kinds = self.kinds
        if not target:
            return None
        if all(kinds[t] == "class" for t in target):
            if len(target) != 1:
                raise ParamsError(f"images.target: one class column at a time, got {target}")
            if section.num_classes is None:
                self._state["num_classes"] = int(frame[target[0]].max()) + 1
            return ClassificationHead(self._state["num_classes"], target[0], network=strided_cnn)
        if any(kinds[t] in ("class", "mask") for t in target):
            raise ParamsError(f"images.target: {target} mixes classes or masks with floats; regress floats or classify one class")
        size = self.preprocess.size or readers.first_image_size(Path(section.synthetic), self.preprocess)
        offset, scale = target_scale(frame, kinds, target, size)
        self._state.update(offset=offset, scale=scale)
        return RegressionHead(self.labels, target, network=partial(strided_cnn, offset=np.float32(offset), scale=np.float32(scale)),
                              loss_scale=np.asarray(scale, np.float32))

    @property
    def state(self) -> dict:
        return self._state

    def synthesize(self, params):
        section = params.images
        read, _, _ = readers.read_labelled(_path(section.synthetic, "synthetic"),
                                           Path(section.labels) if section.labels else None, section.key,
                                           self.kinds, self.preprocess)
        ids, pixels, labels = read.arrays(self.kinds)
        return Images(ids, pixels.astype(np.float32) / 255, labels)

    def image_shape(self, params) -> tuple[int, ...]:
        """(height, width) of every image as the pipeline makes them, plus 3 for RGB."""
        size = self.preprocess.size or readers.first_image_size(_path(params.images.synthetic, "synthetic"),
                                                                  self.preprocess)
        return (*size, 3) if self.preprocess.color == "rgb" else tuple(size)

    def has_real_test(self, params):
        return params.images.test is not None

    def read_real(self, params):
        """The real folder is the unlabelled pool; the test set (if any) is read with the
        target's kinds."""
        section, pre = params.images, self.preprocess
        if pre.size is None:  # the synthetic images' size, as render made them
            size = readers.first_image_size(_path(section.synthetic, "synthetic"), pre)
            pre = readers.Preprocess(size, pre.fit, pre.color)
        pool = readers.read_unlabelled(_path(section.real, "real"), pre)
        pool_ids, pool_pixels, _ = pool.arrays({})
        pool = Images(pool_ids, pool_pixels.astype(np.float32) / 255)
        if not self.has_real_test(params):
            return pool, None
        test_kinds = {name: self.kinds[name] for name in self.test_labels.names}
        test, _, _ = readers.read_labelled(_path(section.test, "test"),
                                           Path(section.test_labels) if section.test_labels else None,
                                           section.key, test_kinds, pre)
        test_ids, test_pixels, test_labels = test.arrays(test_kinds)
        return pool, Images(test_ids, test_pixels.astype(np.float32) / 255, test_labels)

    def bad_labels(self, labels):
        negative = {f"label {name!r} is a negative class": np.asarray(labels[name]) < 0
                    for name, kind in self.kinds.items() if kind == "class" and name in labels}
        return {**negative, **super().bad_labels(labels)}


def strided_cnn(outputs: int, image_shape: tuple[int, ...], **scaling):
    """The estimator of images of any size (torch imported only when one is built)."""
    from refiner.estimator.networks import StridedCNN
    return StridedCNN(outputs, image_shape, **scaling)


def _label_frame(section):
    images = _path(section.synthetic, "synthetic")
    table = readers.table_source(images, with_images=False)
    return table[0] if table is not None else readers.read_label_table(_path(section.labels, "labels"))


def target_scale(frame, kinds: dict[str, str], target: list[str], size: tuple[int, int]) -> tuple[list, list]:
    """(offset, scale) per regressed value, so the network predicts values near 0 and the
    loss weighs every value alike: positions (keypoints, boxes) by the image size (they move
    with the resize), other floats by the synthetic labels' mean and sd."""
    offset, scale = [], []
    for name in target:
        if kinds[name] == "box" or kinds[name].startswith("keypoints"):
            height, width = size
            pairs = readers.kind_length(kinds[name]) // 2
            offset += [width / 2, height / 2] * pairs
            scale += [width / 4, height / 4] * pairs
        else:
            values = np.array([readers.as_floats(v) for v in frame[name].dropna()], np.float64)
            values = values.reshape(len(values), -1)
            offset += values.mean(0).tolist()
            scale += np.maximum(values.std(0), 1e-6).tolist()
    return offset, scale


def _auto_target(kinds: dict[str, str]) -> list[str]:
    """Every float-valued column, else the first class column, else none (masks only)."""
    floats = [name for name, kind in kinds.items() if kind not in ("class", "mask")]
    classes = [name for name, kind in kinds.items() if kind == "class"]
    return floats or classes[:1]


WORLD = ImagesWorld
