"""What ties the refiner to the task's labels beyond the paper's pixel L1: a frozen estimator
trained on the synthetic images (never on real ones) gives the real pool pseudo-classes for
the class-conditional discriminator, and asks each refined image for its synthetic label
(the semantic term, CyCADA's)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from refiner.config import EstimatorParams, SimGANParams
from refiner.estimator.training import balanced_pseudo_labels, predict, train_model

FROZEN_SEED_OFFSET = 10_000  # the frozen estimator: a seed apart from the evaluated ones


def frozen_estimator(world, config: SimGANParams, synthetic01: np.ndarray, targets: np.ndarray, seed: int,
                     progress: bool = True) -> nn.Module | None:
    """The estimator the semantic term asks and the conditional discriminator's pseudo-labels
    come from, trained on the synthetic images, or None when neither is on. Its seed is one
    no evaluated estimator uses: evaluate's label-kept check then asks other networks than
    the one the refiner learnt to satisfy."""
    if not (config.semantic_weight or config.conditional):
        return None
    recipe = EstimatorParams(steps=config.semantic_steps, adaptation="none")
    estimator, history = train_model(world.head, synthetic01, targets, recipe, seed + FROZEN_SEED_OFFSET, progress,
                                     desc="train_refiner: the frozen estimator")
    metric = world.head.metric.name
    print(f"train_refiner: frozen {world.name} estimator, held-out synthetic {metric} {history[-1]['held_out']:.3f}")
    return estimator


def pool_classes(world, config: SimGANParams, estimator: nn.Module | None, synthetic_targets: np.ndarray,
                 real01: np.ndarray) -> tuple[np.ndarray, np.ndarray, int] | None:
    """(synthetic classes, real-pool pseudo-classes balanced to the synthetic shares, number of
    classes) for the conditional discriminator, or None when it is off."""
    if not config.conditional:
        return None
    head = world.head
    prior = np.bincount(synthetic_targets, minlength=head.num_classes)
    real_classes = balanced_pseudo_labels(predict(head, estimator, real01), prior)
    print(f"train_refiner: real-pool pseudo-classes per class {np.bincount(real_classes, minlength=head.num_classes).tolist()}")
    return synthetic_targets, real_classes, head.num_classes


def semantic_loss(head, estimator: nn.Module, synthetic_targets: np.ndarray):
    """The task-consistency term for the refiner: ``estimator``, trained on the synthetic
    images and frozen here, must still predict each refined image's synthetic label. Returns
    ``loss(refined, index)`` for refined images in the networks' [-1, 1] range made from the
    synthetic images at ``index``. Gradients reach the refiner through the estimator; the
    estimator itself never changes."""
    estimator.eval().requires_grad_(False)
    targets = torch.from_numpy(np.asarray(synthetic_targets))

    def loss(refined: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return head.loss(estimator((refined + 1) / 2), targets[index])
    return loss
