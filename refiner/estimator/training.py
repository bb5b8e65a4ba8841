"""One generic training recipe for every head: the head gives the network, loss, score and
(for adaptation) pseudo-labels and its consistency; this module gives the training loop,
seeds, the label-free adaptation to the unlabelled real pool, and prediction."""

from __future__ import annotations

import copy
import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from refiner.config import EstimatorParams
from refiner.progress import bar
from refiner.tensors import channels_first


def random_shift(batch: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    if max_shift == 0:
        return batch
    padded = F.pad(batch, [max_shift] * 4)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2,), generator=generator).tolist()
    return padded[..., dy:dy + batch.shape[-2], dx:dx + batch.shape[-1]]


def augmented_view(batch: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Another view of each image, drawn per image (mean_teacher's two views differ): a shift
    of up to ``max_shift`` pixels, up to 10 degrees of rotation and 10% of scale, and a little
    pixel noise; the edge pixels fill what moves in. French et al. use like transforms."""
    n, _, height, width = batch.shape
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(10)
    scale = 1 + (torch.rand(n, generator=generator) * 2 - 1) * 0.1
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * max_shift * 2 / torch.tensor([width, height])
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    view = F.grid_sample(batch, grid, padding_mode="border", align_corners=False)
    return (view + 0.03 * torch.randn(view.shape, generator=generator)).clamp(0, 1)


def train_model(head, images01: np.ndarray, targets: np.ndarray, config: EstimatorParams, seed: int,
                progress: bool = True, extra_images01: np.ndarray | None = None,
                extra_targets: np.ndarray | None = None, desc: str = "train estimator"):
    """Returns (model, history): the train loss and the head's score on data held out of
    the training set (``held_out``) every ``eval_every`` steps. ``extra_*`` (pseudo-labelled
    real images) are trained on, never held out."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    n_labelled = len(images01)
    if extra_images01 is not None and len(extra_images01):
        images01, targets = np.concatenate([images01, extra_images01]), np.concatenate([targets, extra_targets])
    x = channels_first(images01)
    y = torch.from_numpy(np.asarray(targets))
    order = torch.randperm(n_labelled, generator=generator)
    n_val = int(n_labelled * config.val_fraction)
    val, train = order[:n_val], torch.cat([order[n_val:], torch.arange(n_labelled, len(x))])
    model = head.estimator(tuple(np.shape(images01)[1:]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=config.steps)
    history, losses = [], []
    for step in bar(range(1, config.steps + 1), desc=desc, enabled=progress):
        model.train()
        index = train[torch.randint(len(train), (config.batch_size,), generator=generator)]
        loss = head.loss(model(random_shift(x[index], config.max_shift, generator)), y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if step % config.eval_every == 0 or step == config.steps:
            held_out = head.score(predict(head, model, images01[val.numpy()]), y[val].numpy()) if n_val else float("nan")
            history.append({"step": step, "train_loss": float(np.mean(losses)), "held_out": held_out})
            losses = []
    return model, history


def self_train(head, images01: np.ndarray, targets: np.ndarray, unlabeled01: np.ndarray,
               config: EstimatorParams, seed: int, progress: bool, desc: str, model: nn.Module):
    """Self-training: from the labelled set's ``model``, each round give the real images the
    model is sure of its own predictions as targets and retrain from scratch on both.
    Returns (model, fraction of real images pseudo-labelled in the last round, its history)."""
    kept, history = 0.0, None
    for round_ in range(1, config.self_training_rounds + 1):
        sure, pseudo = head.pseudo_labels(predict(head, model, unlabeled01), config.pseudo_label_threshold)
        kept = float(sure.mean())
        model, history = train_model(
            head, images01, targets, config, seed, progress,
            extra_images01=np.repeat(unlabeled01[sure], config.pseudo_label_repeat, axis=0),
            extra_targets=np.repeat(pseudo[sure], config.pseudo_label_repeat, axis=0),
            desc=f"{desc} round {round_}/{config.self_training_rounds} ({kept:.0%} pseudo-labelled)")
    return model, kept, history


def mean_teacher(head, images01: np.ndarray, targets: np.ndarray, unlabeled01: np.ndarray,
                 config: EstimatorParams, seed: int, progress: bool, desc: str, model: nn.Module):
    """Self-ensembling (French et al., ICLR 2018), from the labelled set's ``model``: the
    student goes on learning the labelled images and learns to agree, on one augmented view of
    each unlabelled real image, with the teacher (the moving average of its weights) on
    another view. With classes, the targets are the teacher's pool predictions balanced to
    the labelled set's class shares (refreshed every ``eval_every`` steps), learnt where the
    teacher is sure. Returns (the teacher, the share of the pool it is sure of at the end,
    None: no new held-out curve)."""
    generator = torch.Generator().manual_seed(seed + 7919)  # not train_model's stream: its draws stay as they were
    student, teacher = copy.deepcopy(model), copy.deepcopy(model).eval()
    for weight in teacher.parameters():
        weight.requires_grad_(False)
    x, y, pool = channels_first(images01), torch.from_numpy(np.asarray(targets)), channels_first(unlabeled01)
    prior = np.bincount(targets, minlength=head.num_classes) if head.has_classes and config.class_balanced else None
    optimizer = torch.optim.AdamW(student.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=config.teacher_steps)
    pool_targets = None
    for step in bar(range(config.teacher_steps), desc=f"{desc} mean teacher", enabled=progress):
        if head.has_classes and step % config.eval_every == 0:
            pool_targets = teacher_targets(head, teacher, unlabeled01, prior)
        student.train()
        index = torch.randint(len(x), (config.batch_size,), generator=generator)
        supervised = head.loss(student(random_shift(x[index], config.max_shift, generator)), y[index])
        real_index = torch.randint(len(pool), (config.batch_size,), generator=generator)
        real = pool[real_index]
        with torch.no_grad():
            taught = head.predictions(teacher(augmented_view(real, config.max_shift, generator)))
        learnt = student(augmented_view(real, config.max_shift, generator))
        real_targets = None if pool_targets is None else pool_targets[real_index]
        loss = supervised + config.consistency_weight * head.consistency(learnt, taught, real_targets,
                                                                          config.pseudo_label_threshold)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            for mean, current in zip(teacher.parameters(), student.parameters()):
                mean.lerp_(current, 1 - config.teacher_ema)
    sure = head.sure(predict(head, teacher, unlabeled01), config.pseudo_label_threshold)
    return teacher, float(np.mean(sure)), None


def teacher_targets(head, teacher: nn.Module, unlabeled01: np.ndarray, prior: np.ndarray | None) -> torch.Tensor:
    """The teacher's classes for the pool, balanced to ``prior`` where it is given."""
    probabilities = predict(head, teacher, unlabeled01)
    classes = balanced_pseudo_labels(probabilities, prior) if prior is not None else probabilities.argmax(1)
    return torch.from_numpy(classes)


ADAPTATIONS = {"self_training": self_train, "mean_teacher": mean_teacher}


def adapted(head, images01: np.ndarray, targets: np.ndarray, unlabeled01: np.ndarray | None,
            config: EstimatorParams, seed: int, progress: bool = True, desc: str = "train estimator"):
    """The labelled set's model, then (with an unlabelled pool and an adaptation) that model
    adapted to the pool without a real label. Returns (model, history, the share of the pool
    the adaptation learnt from, the model before adaptation)."""
    adapting = unlabeled01 is not None and config.adaptation != "none"
    desc = f"{desc} seed {seed}"
    plain, history = train_model(head, images01, targets, config, seed, progress,
                                 desc=desc + (" labelled" if adapting else ""))
    if not adapting:
        return plain, history, 0.0, plain
    model, kept, adapted_history = ADAPTATIONS[config.adaptation](head, images01, targets, unlabeled01, config, seed,
                                                                  progress, desc, plain)
    return model, adapted_history or history, kept, plain


class SeedRun(NamedTuple):
    seed: int
    model: nn.Module        # the end-to-end model (adapted to the real pool when the recipe says so)
    history: list[dict]
    plain: nn.Module        # the same recipe without adaptation: what measures the refiner alone


def train_seeds(head, images01: np.ndarray, targets: np.ndarray, config: EstimatorParams, seed: int,
                progress: bool = True, unlabeled01: np.ndarray | None = None,
                desc: str = "train estimator") -> list[SeedRun]:
    """One run for each of seeds seed, seed + 1, ... (``config.num_seeds`` of them): under
    domain shift the spread over seeds is as large as the effects being measured."""
    runs = []
    for model_seed in range(seed, seed + config.num_seeds):
        model, history, pseudo_labelled, plain = adapted(head, images01, targets, unlabeled01, config, model_seed,
                                                         progress, desc)
        history[-1]["pseudo_labelled"] = pseudo_labelled
        runs.append(SeedRun(model_seed, model, history, plain))
    return runs


def balanced_pseudo_labels(probabilities: np.ndarray, prior: np.ndarray, iterations: int = 50) -> np.ndarray:
    """Classes for unlabelled images whose shares follow ``prior`` (Sinkhorn-Knopp, as in
    class-balanced self-training, Zou et al. 2018): a synthetic-trained model reads many real
    9s as 3s; asked to give 9 its share, it gives it to the images it finds most 9-like."""
    plan = np.asarray(probabilities, np.float64) + 1e-12
    prior = np.asarray(prior, np.float64) / np.sum(prior)
    for _ in range(iterations):
        plan *= prior / np.maximum(plan.sum(0), 1e-300)  # each class gets its share (none: a class never drawn)
        plan /= plan.sum(1, keepdims=True)          # each image spreads one unit over the classes
    return plan.argmax(1)


@torch.no_grad()
def predict(head, model: nn.Module, images01: np.ndarray, batch_size: int = 2048) -> np.ndarray:
    """The head's predictions (e.g. class probabilities) for float images in [0, 1]."""
    model.eval()
    x = channels_first(images01)
    return torch.cat([head.predictions(model(x[i:i + batch_size])) for i in range(0, len(x), batch_size)]).numpy()
