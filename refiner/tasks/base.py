"""The task contract: what the pipeline needs to know about one world (digits, gaze, ...).

A task says what its labels are (a pyarrow schema, so the dataset contract stores them),
how it makes labelled synthetic images and reads real ones, and what its estimator (the
downstream model, in the paper's words) is: the network, its loss, its metric, how sure it
is without labels, and how its results are plotted. The stages and the library are generic:
they call a task's methods and never its name.

Most tasks are a classification or a regression: subclass ``ClassificationTask`` or
``RegressionTask`` and write ``synthesize`` and ``read_real``; the rest has defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from torch import nn

from refiner.config import Section
from refiner.dataset import channels


@dataclass
class Images:
    """Images a task made or read: float32 N x H x W (grayscale) or N x H x W x 3 (RGB) in
    [0, 1], with ids and label columns
    (``labels`` is None where the source has no labels)."""
    ids: np.ndarray
    pixels: np.ndarray
    labels: dict[str, np.ndarray] | None = None

    def take(self, index: np.ndarray) -> "Images":
        labels = None if self.labels is None else {k: np.asarray(v)[index] for k, v in self.labels.items()}
        return Images(np.asarray(self.ids)[index], self.pixels[index], labels)


@dataclass(frozen=True)
class Metric:
    """How a task scores its estimator on labelled images."""
    name: str                 # a key of metrics/eval.json: "accuracy", "error_deg"
    higher_is_better: bool
    cell: str                 # format of one figure in the result table
    title: str                # the table's column title


class Task:
    """The contract. A subclass sets the class attributes and implements the methods below."""
    name: ClassVar[str]
    labels: ClassVar[pa.Schema]                 # label columns and their pyarrow types
    Params: ClassVar[type[Section]] = Section  # its params.yaml section, named ``name`` (may be empty: {})
    metric: ClassVar[Metric]
    can_pseudo_label: ClassVar[bool] = False    # self-training needs a confidence per prediction
    test_label_columns: ClassVar[list[str] | None] = None  # what a real test set must label (None: all)
    learns_labels: ClassVar[bool] = True  # False: no estimator fits the labels; evaluate reports label-free figures

    # -- tasks whose labels come from the user's data (images) know them once configured
    def configured(self, params) -> "Task":
        """This task for ``params`` (``refiner.tasks.task_for``); a fixed world returns itself."""
        return self

    def state(self) -> dict:
        """What ``configured`` derived from the data (JSON-able): saved with each estimator."""
        return {}

    def restored(self, state: dict) -> "Task":
        """The task a checkpoint was trained for, from its ``state``."""
        return self

    @property
    def test_labels(self) -> pa.Schema:
        """The label columns a real test set must have (``test_label_columns``)."""
        return pa.schema([self.labels.field(name) for name in self.test_label_columns or self.labels.names])

    # -- data
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
        """Rows whose labels the task cannot train or score on: {problem: mask of rows}.
        Every dataset check already refuses missing, NaN and infinite labels."""
        return {}

    # -- the estimator
    def estimator(self, image_shape: tuple[int, ...]) -> nn.Module:
        """The network for images of ``image_shape`` (H, W) or (H, W, C)."""
        raise NotImplementedError

    def targets(self, labels: dict[str, np.ndarray]) -> np.ndarray:
        """Label columns -> the training target array."""
        raise NotImplementedError

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def predictions(self, outputs: torch.Tensor) -> torch.Tensor:
        """Network outputs -> what is averaged over an ensemble and scored (e.g. probabilities)."""
        return outputs

    def score(self, predictions: np.ndarray, targets: np.ndarray) -> float:
        raise NotImplementedError

    def pseudo_labels(self, predictions: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """(mask of the predictions sure enough to train on, their targets); ``can_pseudo_label`` tasks only."""
        raise NotImplementedError

    def as_targets(self, predictions: np.ndarray) -> np.ndarray:
        """Predictions as training targets (reverse validation trains on them)."""
        return np.asarray(predictions, np.float32)

    def confidence(self, predictions_per_model: list[np.ndarray]) -> float:
        """How sure the models are on unlabelled images, higher is surer: the label-free score."""
        raise NotImplementedError

    def baseline(self):
        """A scikit-learn model of the task on flattened pixels: the refinery gain of a model
        that is not ours (users train their own on the refined dataset). None: no baseline."""
        return None

    def baseline_predictions(self, model, flat01: np.ndarray) -> np.ndarray:
        """The baseline's output in the form ``score`` takes."""
        return model.predict(flat01)

    # -- reporting
    def details(self, predictions_per_model: list[np.ndarray], targets: np.ndarray) -> dict:
        """Extra figures for metrics/eval.json and the plots (confusion, per-sample errors...)."""
        return {}

    def plot(self, results: dict[str, dict], plots_dir: Path) -> list[Path]:
        """Figures of the results (one entry per training set, with ``details``); their paths."""
        return []


def read_summary(source: str, num_read: int, skipped: list[tuple[str, str]], shown: int = 20) -> str:
    """What a reader of external data read and what it skipped, and why (the first ``shown``)."""
    lines = [f"{source}: read {num_read} images, skipped {len(skipped)}"]
    lines += [f"  skipped {what}: {why}" for what, why in skipped[:shown]]
    if len(skipped) > shown:
        lines.append(f"  ... and {len(skipped) - shown} more")
    return "\n".join(lines)


class SmallCNN(nn.Module):
    """A small convolutional estimator for small images: three 3x3 convs, one pooling, then
    a linear head on a ``pooled`` grid of features (keeps where things are)."""

    def __init__(self, outputs: int, widths=(32, 64, 128), pooled: tuple[int, int] = (2, 2), hidden: int = 0,
                 in_channels: int = 1):
        super().__init__()
        a, b, c = widths
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, a, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(a, b, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(b, c, 3, padding=1), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(pooled))
        size = c * pooled[0] * pooled[1]
        head = [nn.Linear(size, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, outputs)] if hidden else \
               [nn.Dropout(0.3), nn.Linear(size, outputs)]
        self.head = nn.Sequential(nn.Flatten(), *head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ClassificationTask(Task):
    """One integer ``label`` column with values 0..num_classes-1; scored by accuracy."""
    num_classes: ClassVar[int]
    labels = pa.schema([("label", pa.int64())])
    target_column = "label"
    metric = Metric("accuracy", True, "{:.1%}", "accuracy on real test")
    can_pseudo_label = True

    def bad_labels(self, labels):
        values = np.asarray(labels[self.target_column])
        return {f"{self.target_column} outside the classes 0..{self.num_classes - 1}": (values < 0) | (values >= self.num_classes)}

    def estimator(self, image_shape):
        return SmallCNN(self.num_classes, in_channels=channels(image_shape))

    def targets(self, labels):
        return np.asarray(labels[self.target_column], np.int64)

    def loss(self, outputs, targets):
        return F.cross_entropy(outputs, targets)

    def predictions(self, outputs):
        return outputs.softmax(1)

    def score(self, predictions, targets):
        return float((predictions.argmax(1) == np.asarray(targets)).mean())

    def pseudo_labels(self, predictions, threshold):
        return predictions.max(1) >= threshold, self.as_targets(predictions)

    def as_targets(self, predictions):
        return predictions.argmax(1)

    def baseline(self):
        from sklearn.svm import SVC
        return SVC(kernel="rbf")

    def baseline_predictions(self, model, flat01):
        return np.eye(self.num_classes)[model.predict(flat01)]  # one-hot: what score takes

    def confidence(self, predictions_per_model):
        """Mean top-class probability: how sure the models are, needing no label."""
        return float(np.mean([p.max(1).mean() for p in predictions_per_model]))

    def details(self, predictions_per_model, targets):
        matrix = np.zeros((self.num_classes, self.num_classes), np.int64)
        for predictions in predictions_per_model:  # pooled over the seeds' models
            np.add.at(matrix, (np.asarray(targets), predictions.argmax(1)), 1)
        per_class = matrix.diagonal() / np.maximum(matrix.sum(1), 1)
        return {"per_class_accuracy": {str(c): float(a) for c, a in enumerate(per_class)},
                "confusion": matrix.tolist()}

    def plot(self, results, plots_dir):
        from refiner.plots import confusion_matrix
        return [confusion_matrix(np.array(r["confusion"]), f"trained on {name}: {r['accuracy']:.1%} on real",
                                 plots_dir / f"confusion-{name}.png") for name, r in results.items()]


class RegressionTask(Task):
    """Float label columns regressed jointly; scored by mean absolute error unless overridden."""
    metric = Metric("mae", False, "{:.3f}", "mean absolute error on real test")
    target_columns: ClassVar[list[str] | None] = None  # None: every label column

    def estimator(self, image_shape):
        return SmallCNN(self.num_outputs, widths=(16, 32, 64), pooled=(4, 4), hidden=128,
                        in_channels=channels(image_shape))

    @property
    def num_outputs(self) -> int:
        """Scalars count one, fixed-size lists (keypoints, boxes) their length."""
        return sum(f.type.list_size if pa.types.is_fixed_size_list(f.type) else 1
                   for f in self.labels if f.name in self.regressed)

    @property
    def regressed(self) -> list[str]:
        """The columns regressed: ``target_columns``, or all of them."""
        return self.target_columns or self.labels.names

    def targets(self, labels):
        return np.concatenate([np.asarray(labels[name], np.float32).reshape(len(labels[name]), -1)
                               for name in self.regressed], axis=1)

    def loss(self, outputs, targets):
        return F.mse_loss(outputs, targets)

    def baseline(self):
        from sklearn.kernel_ridge import KernelRidge
        return KernelRidge(kernel="rbf", alpha=0.1)

    def errors(self, predictions: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """One error per sample."""
        return np.abs(predictions - targets).mean(1)

    def score(self, predictions, targets):
        return float(self.errors(predictions, targets).mean())

    def confidence(self, predictions_per_model):
        """Minus the models' disagreement (mean error of each model against their mean):
        regressions have no class probability, but models that agree on real images are
        more likely right there. Needs no label."""
        mean = np.mean(predictions_per_model, axis=0)
        return -float(np.mean([self.errors(p, mean).mean() for p in predictions_per_model]))

    def details(self, predictions_per_model, targets):
        return {"errors": np.concatenate([self.errors(p, targets) for p in predictions_per_model]).tolist()}

    def plot(self, results, plots_dir):
        from refiner.plots import error_histograms
        return [error_histograms({name: r["errors"] for name, r in results.items()},
                                 {name: r[self.metric.name] for name, r in results.items()},
                                 f"{self.metric.title} (per image)", plots_dir / "errors.png")]
