"""One generic training recipe for every head: the head gives the network, loss, score and
(for self-training) pseudo-labels; this module gives the training loop, seeds,
self-training and prediction."""

from __future__ import annotations

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


def self_train(head, images01: np.ndarray, targets: np.ndarray, unlabeled01: np.ndarray | None,
               config: EstimatorParams, seed: int, progress: bool = True, desc: str = "train estimator"):
    """Self-training on unlabelled real images: train on the labelled (synthetic or refined)
    set, then each round give the real images the model is sure of its own predictions as
    targets and retrain from scratch on both. Uses no real label. Returns (model, history,
    fraction of real images pseudo-labelled in the last round, the model before self-training)."""
    rounds = config.self_training_rounds if unlabeled01 is not None else 0
    model, history = train_model(head, images01, targets, config, seed, progress,
                                 desc=f"{desc} seed {seed}" + (f" round 0/{rounds}" if rounds else ""))
    plain, kept = model, 0.0
    for round_ in range(1, rounds + 1):
        sure, pseudo = head.pseudo_labels(predict(head, model, unlabeled01), config.pseudo_label_threshold)
        kept = float(sure.mean())
        model, history = train_model(
            head, images01, targets, config, seed, progress,
            extra_images01=np.repeat(unlabeled01[sure], config.pseudo_label_repeat, axis=0),
            extra_targets=np.repeat(pseudo[sure], config.pseudo_label_repeat, axis=0),
            desc=f"{desc} seed {seed} round {round_}/{rounds} ({kept:.0%} pseudo-labelled)")
    return model, history, kept, plain


class SeedRun(NamedTuple):
    seed: int
    model: nn.Module        # the end-to-end model (self-trained when the recipe says so)
    history: list[dict]
    plain: nn.Module        # the same recipe without self-training: what measures the refiner alone


def train_seeds(head, images01: np.ndarray, targets: np.ndarray, config: EstimatorParams, seed: int,
                progress: bool = True, unlabeled01: np.ndarray | None = None,
                desc: str = "train estimator") -> list[SeedRun]:
    """One run for each of seeds seed, seed + 1, ... (``config.num_seeds`` of them): under
    domain shift the spread over seeds is as large as the effects being measured."""
    runs = []
    for model_seed in range(seed, seed + config.num_seeds):
        model, history, pseudo_labelled, plain = self_train(head, images01, targets, unlabeled01, config,
                                                            model_seed, progress, desc)
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
