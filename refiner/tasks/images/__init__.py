"""The images task: the user's own simulator and camera, with no code to write.

Synthetic: a folder of images plus a labels file (CSV, JSON Lines or Parquet, one row per
image, keyed by its path in the folder), or a Parquet / Hugging Face ``datasets`` directory
with an ``image`` column. Real: a folder of unlabelled camera images, plus a labelled real
test set for ``evaluate`` in the same formats as synthetic. Grayscale or RGB, any size: one
size and colour mode for all (``size``, ``fit``, ``color``); keypoints, boxes and masks move
with the resize or crop (``readers``).

The label kinds are inferred from the labels file and printed (pin them in
``images.label_kinds``), and choose the estimator: every float-valued column (float,
vector, keypoints, box) regressed jointly, or, with none, one class column classified.
``simrefinery init`` (``cli``) writes this section from folders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from refiner.config import ParamsError, Section
from refiner.dataset import channels as dataset_channels
from refiner.tasks.base import ClassificationTask, Images, RegressionTask, Task
from refiner.tasks.images import readers


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


class StridedCNN(nn.Module):
    """The estimator for images of any size: 3x3 convs that each halve the resolution until it
    is at most 8 pixels a side (a 256x256 image costs about what a 32x32 one does in the
    digits' full-resolution CNN), then a linear head on a 4x4 grid of features, which keeps
    where things are (keypoints and boxes are positions)."""

    def __init__(self, outputs: int, image_shape: tuple[int, ...], offset=None, scale=None, width: int = 32):
        super().__init__()
        # outputs are offset + scale * the head's: a regression starts near its targets' middle
        self.register_buffer("offset", torch.as_tensor(np.zeros(outputs) if offset is None else offset, dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(np.ones(outputs) if scale is None else scale, dtype=torch.float32))
        layers, channels, side = [], dataset_channels(image_shape), max(image_shape[:2])
        while True:
            out = min(width * 2 ** (len(layers) // 2), 128)
            layers += [nn.Conv2d(channels, out, 3, stride=2 if side > 8 else 1, padding=1), nn.ReLU(inplace=True)]
            channels, side = out, (side + 1) // 2
            if side <= 8:
                break
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d((4, 4)))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(channels * 16, 128), nn.ReLU(inplace=True),
                                  nn.Linear(128, outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.offset + self.scale * self.head(self.features(x))


class ImagesData(Task):
    """What every images task shares: where its data is, how it is read, and the label kinds
    (``state``: JSON-able, saved with each estimator so a checkpoint rebuilds its task)."""
    name = "images"
    Params = ImagesParams
    labels = pa.schema([])
    can_pseudo_label = True  # params may ask for self-training; ``configured`` refuses it for a regression
    state_: dict = {}

    def configured(self, params) -> Task:
        """Reads the synthetic labels table (not the images): the kinds unless pinned, the
        class count unless pinned, and the regression targets' scale."""
        section = params.images
        frame = self._label_frame(section)
        if section.label_kinds:
            kinds = dict(section.label_kinds)
        else:
            kinds = readers.infer_kinds(frame, section.key if section.labels else "file", section.labels or section.synthetic)
            print(f"images: label kinds inferred from the synthetic labels: {kinds} (pin them in images.label_kinds)")
        target = section.target if section.target is not None else _auto_target(kinds)
        unknown = [name for name in target if name not in kinds]
        if unknown:
            raise ParamsError(f"images.target: {unknown} are not label columns ({sorted(kinds)})")
        state = {"label_kinds": kinds, "target": target, "num_classes": section.num_classes}
        if target and all(kinds[t] == "class" for t in target) and section.num_classes is None:
            state["num_classes"] = int(frame[target[0]].max()) + 1
        elif target and all(kinds[t] not in ("class", "mask") for t in target):
            size = tuple(section.size) if section.size else \
                readers.first_image_size(Path(section.synthetic), self._preprocess(section))
            state["offset"], state["scale"] = target_scale(frame, kinds, target, size)
        task = self.restored(state)
        if params.train_estimator.self_training_rounds and task.learns_labels and not task.can_pseudo_label:
            raise ParamsError("train_estimator.self_training_rounds: the images task regresses "
                              f"{target}: no prediction confidence to pseudo-label with; set it to 0")
        if params.train_refiner.conditional and not task.can_pseudo_label:
            raise ParamsError(f"train_refiner.conditional: the images task has no class target ({target or 'no labels'}) "
                              "to condition the discriminator on; set it to false (and lambda to 10)")
        return task

    @staticmethod
    def _label_frame(section):
        images = _path(section.synthetic, "synthetic")
        table = readers.table_source(images, with_images=False)
        return table[0] if table is not None else readers.read_label_table(_path(section.labels, "labels"))

    def restored(self, state: dict) -> Task:
        kinds, target = state["label_kinds"], state["target"]
        if not target:
            task = ImagesLabelFree()
        elif all(kinds[t] == "class" for t in target):
            if len(target) != 1:
                raise ParamsError(f"images.target: one class column at a time, got {target}")
            task = ImagesClassifier()
            task.num_classes, task.target_column = state["num_classes"], target[0]
        elif any(kinds[t] in ("class", "mask") for t in target):
            raise ParamsError(f"images.target: {target} mixes classes or masks with floats; regress floats or classify one class")
        else:
            task = ImagesRegressor()
            task.target_columns = list(target)
            task.offset, task.scale = (np.asarray(state[key], np.float32) for key in ("offset", "scale"))
        task.labels = pa.schema([(name, readers.arrow_type(kind)) for name, kind in kinds.items()])
        task.test_label_columns = list(target)
        task.kinds, task.state_ = kinds, state
        return task

    def state(self) -> dict:
        return self.state_

    def _preprocess(self, section) -> readers.Preprocess:
        return readers.Preprocess(tuple(section.size) if section.size else None, section.fit, section.color)

    def synthesize(self, params):
        section = params.images
        read, _, _ = readers.read_labelled(_path(section.synthetic, "synthetic"),
                                           Path(section.labels) if section.labels else None, section.key,
                                           self.kinds, self._preprocess(section))
        ids, pixels, labels = read.arrays(self.kinds)
        return Images(ids, pixels.astype(np.float32) / 255, labels)

    def has_real_test(self, params):
        return params.images.test is not None

    def read_real(self, params):
        """The real folder is the unlabelled pool; the test set (if any) is read with the
        target's kinds."""
        section = params.images
        pre = self._preprocess(section)
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
        return {f"label {name!r} is a negative class": np.asarray(labels[name]) < 0
                for name, kind in getattr(self, "kinds", {}).items() if kind == "class" and name in labels}


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


class ImagesClassifier(ImagesData, ClassificationTask):
    def estimator(self, image_shape):
        return StridedCNN(self.num_classes, image_shape)

    def bad_labels(self, labels):
        return {**ImagesData.bad_labels(self, labels), **ClassificationTask.bad_labels(self, labels)}


class ImagesRegressor(ImagesData, RegressionTask):
    can_pseudo_label = False
    offset: np.ndarray
    scale: np.ndarray

    def estimator(self, image_shape):
        return StridedCNN(self.num_outputs, image_shape, self.offset, self.scale)

    def loss(self, outputs, targets):
        """Mean squared error in units of each value's scale."""
        scale = torch.from_numpy(self.scale)
        return F.mse_loss(outputs / scale, targets / scale)


class ImagesLabelFree(ImagesData):
    """Labels no estimator here fits (masks only, or ``target: []``): they pass through
    refinement, and evaluate reports the label-free figures."""
    learns_labels = can_pseudo_label = False


TASK = ImagesData()
