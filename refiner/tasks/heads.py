"""A head: what learns a world's labels. The estimator network (the downstream model, in
the paper's words), its targets and loss, its predictions and score, how sure it is without
labels (pseudo-labels, confidence), a scikit-learn baseline, and its report figures and
plots. Two kinds: ``ClassificationHead`` (one integer class column, accuracy) and
``RegressionHead`` (float columns regressed jointly; mean absolute error unless the world
gives its own per-sample error, as gaze's angular error). A world names its head; the
images world builds one from the label kinds it reads.

torch is imported where a head trains or scores, not here: the stages that only render or
ingest, and every command's ``--help``, start without it (about 1 s a process).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:
    import torch
    from torch import nn

# (number of outputs, image shape (H, W) or (H, W, C)) -> the estimator network; None: the
# small CNNs of refiner.estimator.networks
Network = Callable[[int, tuple[int, ...]], "nn.Module"]


@dataclass(frozen=True)
class Metric:
    """How a head scores its estimator on labelled images."""
    name: str                 # its name in metrics/eval.json and the table: "accuracy", "error_deg"
    higher_is_better: bool
    cell: str                 # format of one figure in the result table
    title: str                # the table's column title


class Head:
    """The contract; ``ClassificationHead`` and ``RegressionHead`` implement it."""
    metric: Metric
    columns: list[str]        # the label columns it learns
    has_classes = False       # classes: pseudo-labels for self-training and the conditional discriminator

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

    def as_targets(self, predictions: np.ndarray) -> np.ndarray:
        """Predictions as training targets (reverse validation trains on them)."""
        return np.asarray(predictions, np.float32)

    def confidence(self, predictions_per_model: list[np.ndarray]) -> float:
        """How sure the models are on unlabelled images, higher is surer (needs no label)."""
        raise NotImplementedError

    def sure(self, predictions: np.ndarray, threshold: float) -> np.ndarray:
        """Mask of the unlabelled images a model is sure enough of to learn from."""
        return np.ones(len(predictions), bool)

    def consistency(self, outputs: torch.Tensor, taught: torch.Tensor, targets: torch.Tensor | None,
                    threshold: float) -> torch.Tensor:
        """mean_teacher's term: the student's ``outputs`` on one view of unlabelled images
        against the teacher's predictions ``taught`` on another (``targets``: the teacher's
        balanced classes for them, where the head has classes)."""
        return self.loss(outputs, taught)

    def baseline(self):
        """A scikit-learn model on flattened pixels: the refinery gain of a model that is not
        ours (users train their own on the refined dataset)."""
        raise NotImplementedError

    def baseline_predictions(self, model, flat01: np.ndarray) -> np.ndarray:
        """The baseline's output in the form ``score`` takes."""
        return model.predict(flat01)

    def bad_labels(self, labels: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Rows the head cannot learn: {problem: mask of rows}."""
        return {}

    def details(self, predictions_per_model: list[np.ndarray], targets: np.ndarray) -> dict:
        """Figures beside the score (confusion, per-sample errors) for the plots."""
        return {}

    def plot(self, results: dict, plots_dir: Path) -> list[Path]:
        """Figures of the results (``refiner.evaluation.report.Score`` per training set); their paths."""
        return []


class ClassificationHead(Head):
    """One integer class column with values 0..num_classes-1; scored by accuracy."""
    has_classes = True
    metric = Metric("accuracy", True, "{:.1%}", "accuracy on real test")

    def __init__(self, num_classes: int, column: str = "label", network: Network | None = None):
        self.num_classes, self.columns, self.network = num_classes, [column], network

    @property
    def column(self) -> str:
        return self.columns[0]

    def estimator(self, image_shape):
        from refiner.estimator.networks import small_classifier
        return (self.network or small_classifier)(self.num_classes, image_shape)

    def targets(self, labels):
        return np.asarray(labels[self.column], np.int64)

    def loss(self, outputs, targets):
        import torch.nn.functional as F
        return F.cross_entropy(outputs, targets)

    def predictions(self, outputs):
        return outputs.softmax(1)

    def score(self, predictions, targets):
        return float((predictions.argmax(1) == np.asarray(targets)).mean())

    def pseudo_labels(self, predictions: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """(mask of the predictions sure enough to train on, their targets)."""
        return self.sure(predictions, threshold), self.as_targets(predictions)

    def sure(self, predictions, threshold):
        return predictions.max(1) >= threshold

    def consistency(self, outputs, taught, targets, threshold):
        """Cross-entropy to the teacher's class (balanced where ``targets`` are given), on the
        images whose view the teacher is sure of; averaged over all, so few sure ones weigh little."""
        import torch.nn.functional as F
        sure = (taught.max(1).values >= threshold).float()
        chosen = taught.argmax(1) if targets is None else targets
        return (F.cross_entropy(outputs, chosen, reduction="none") * sure).mean()

    def as_targets(self, predictions):
        return predictions.argmax(1)

    def confidence(self, predictions_per_model):
        """Mean top-class probability: how sure the models are, needing no label."""
        return float(np.mean([p.max(1).mean() for p in predictions_per_model]))

    def baseline(self):
        from sklearn.svm import SVC
        return SVC(kernel="rbf")

    def baseline_predictions(self, model, flat01):
        return np.eye(self.num_classes)[model.predict(flat01)]  # one-hot: what score takes

    def bad_labels(self, labels):
        values = np.asarray(labels[self.column])
        return {f"{self.column} outside the classes 0..{self.num_classes - 1}": (values < 0) | (values >= self.num_classes)}

    def details(self, predictions_per_model, targets):
        matrix = np.zeros((self.num_classes, self.num_classes), np.int64)
        for predictions in predictions_per_model:  # pooled over the seeds' models
            np.add.at(matrix, (np.asarray(targets), predictions.argmax(1)), 1)
        per_class = matrix.diagonal() / np.maximum(matrix.sum(1), 1)
        return {"per_class": {str(c): float(a) for c, a in enumerate(per_class)}, "confusion": matrix.tolist()}

    def plot(self, results, plots_dir):
        from refiner.plots import confusion_matrix
        # the scored estimators (self-trained where the recipe says so), each seed's predictions counted
        return [confusion_matrix(np.array(r.confusion), f"trained on {name}: {r.mean:.1%} ± {r.sd:.1%} on real test\n"
                                 f"end to end; counts summed over {len(r.per_seed)} seeds",
                                 plots_dir / f"confusion-{name}.png") for name, r in results.items()]


MEAN_ABSOLUTE_ERROR = Metric("mae", False, "{:.3f}", "mean absolute error on real test")


def mean_absolute_errors(predictions: np.ndarray, targets: np.ndarray) -> np.ndarray:
    return np.abs(predictions - targets).mean(1)


class RegressionHead(Head):
    """Float label columns (scalars, or fixed-size lists: keypoints, boxes) regressed jointly.
    ``errors``: one error per sample (the score is their mean); ``loss_scale``: each value's
    scale, so the loss weighs every value alike (None: the values as they are)."""

    def __init__(self, labels: pa.Schema, columns: list[str] | None = None, metric: Metric = MEAN_ABSOLUTE_ERROR,
                 errors: Callable[[np.ndarray, np.ndarray], np.ndarray] = mean_absolute_errors,
                 network: Network | None = None, loss_scale: np.ndarray | None = None):
        self.columns = list(columns or labels.names)
        self.num_outputs = sum(labels.field(name).type.list_size if pa.types.is_fixed_size_list(labels.field(name).type)
                               else 1 for name in self.columns)
        self.metric, self.errors, self.network = metric, errors, network
        self.loss_scale = None if loss_scale is None else np.asarray(loss_scale, np.float32)

    def estimator(self, image_shape):
        from refiner.estimator.networks import small_regressor
        return (self.network or small_regressor)(self.num_outputs, image_shape)

    def targets(self, labels):
        return np.concatenate([np.asarray(labels[name], np.float32).reshape(len(labels[name]), -1)
                               for name in self.columns], axis=1)

    def loss(self, outputs, targets):
        import torch.nn.functional as F
        if self.loss_scale is None:
            return F.mse_loss(outputs, targets)
        scale = outputs.new_tensor(self.loss_scale)  # on the outputs' device
        return F.mse_loss(outputs / scale, targets / scale)

    def score(self, predictions, targets):
        return float(self.errors(predictions, targets).mean())

    def confidence(self, predictions_per_model):
        """Minus the models' disagreement (mean error of each model against their mean):
        regressions have no class probability, but models that agree on real images are
        more likely right there. Needs no label."""
        mean = np.mean(predictions_per_model, axis=0)
        return -float(np.mean([self.errors(p, mean).mean() for p in predictions_per_model]))

    def baseline(self):
        from sklearn.kernel_ridge import KernelRidge
        return KernelRidge(kernel="rbf", alpha=0.1)

    def details(self, predictions_per_model, targets):
        return {"errors": np.concatenate([self.errors(p, targets) for p in predictions_per_model]).tolist()}

    def plot(self, results, plots_dir):
        from refiner.plots import error_histograms
        return [error_histograms({name: r.errors for name, r in results.items()},
                                 {name: r.mean for name, r in results.items()},
                                 f"{self.metric.title} (per image)", plots_dir / "errors.png")]
