"""The downstream task model: one small CNN recipe per task, trained on synthetic, refined
or (for the oracle reference only) real images, then tested on real labelled images.

digits: 10-way classification (label); gaze: regression of (gaze_pitch, gaze_yaw) in radians, scored
by angular error in degrees."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm


@dataclass
class TaskConfig:
    steps: int = 600            # optimizer steps, whatever the training set's size
    eval_every: int = 100       # held-out accuracy every this many steps
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    max_shift: int = 1          # random translation augmentation, pixels
    val_fraction: float = 0.1   # held out of the *training* data (never real labels)
    self_training_rounds: int = 0      # rounds of pseudo-labelling unlabelled real images (0: off)
    pseudo_label_threshold: float = 0.9  # only real images the model is this sure of get a label
    pseudo_label_repeat: int = 5       # each pseudo-labelled real image counts this many times
    seed: int = 0
    task: str = "digits"        # digits | gaze


LABEL_COLUMNS = {"digits": ("label",), "gaze": ("gaze_pitch", "gaze_yaw")}
VAL_METRIC = {"digits": "val_accuracy", "gaze": "val_error_deg"}


class DigitCNN(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(512, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class GazeCNN(nn.Module):
    """A small version of the paper's gaze estimator: convs, then dense layers that keep
    where in the 35x55 eye things are (the iris position relative to the lids is the answer)."""
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((4, 6)),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 * 4 * 6, 128), nn.ReLU(inplace=True),
                                  nn.Linear(128, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build_model(task: str) -> nn.Module:
    return {"digits": DigitCNN, "gaze": GazeCNN}[task]()


def targets(rows: dict, task: str) -> np.ndarray:
    """The label columns of a loaded dataset as the training target of ``task``."""
    if task == "digits":
        return np.asarray(rows["label"], np.int64)
    return np.stack([rows["gaze_pitch"], rows["gaze_yaw"]], axis=1).astype(np.float32)


def random_shift(batch: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    if max_shift == 0:
        return batch
    padded = F.pad(batch, [max_shift] * 4)
    size = batch.shape[-1]
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2,), generator=generator).tolist()
    return padded[..., dy:dy + batch.shape[-2], dx:dx + size]


def train_model(images01: np.ndarray, labels: np.ndarray, config: TaskConfig, progress: bool = True,
                extra_images01: np.ndarray | None = None, extra_labels: np.ndarray | None = None):
    """Returns (model, history): train loss and the held-out metric (accuracy, or angular
    error for gaze) every ``eval_every`` steps. ``extra_*`` (pseudo-labelled real images)
    are trained on, never held out."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    n_labelled = len(images01)
    if extra_images01 is not None and len(extra_images01):
        images01, labels = np.concatenate([images01, extra_images01]), np.concatenate([labels, extra_labels])
    x = torch.from_numpy(np.asarray(images01, np.float32))[:, None]
    y = torch.from_numpy(np.asarray(labels))
    order = torch.randperm(n_labelled, generator=generator)
    n_val = int(n_labelled * config.val_fraction)
    val, train = order[:n_val], torch.cat([order[n_val:], torch.arange(n_labelled, len(x))])
    model = build_model(config.task)
    loss_fn = F.cross_entropy if config.task == "digits" else F.mse_loss
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=config.steps)
    history, losses = [], []
    for step in tqdm(range(1, config.steps + 1), desc="train task", disable=not progress, mininterval=1):
        model.train()
        index = train[torch.randint(len(train), (config.batch_size,), generator=generator)]
        loss = loss_fn(model(random_shift(x[index], config.max_shift, generator)), y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if step % config.eval_every == 0 or step == config.steps:
            metric = held_out_metric(model, x[val].numpy()[:, 0], y[val].numpy(), config.task) if n_val else float("nan")
            history.append({"step": step, "train_loss": float(np.mean(losses)), VAL_METRIC[config.task]: metric})
            losses = []
    return model, history


def self_train(images01: np.ndarray, labels: np.ndarray, unlabeled01: np.ndarray | None, config: TaskConfig,
               progress: bool = True):
    """Self-training on unlabelled real images: train on the labelled (synthetic or refined)
    set, then each round give the real images the model is sure of its own predictions as
    labels and retrain from scratch on both. Uses no real label. Returns (model, history,
    fraction of real images pseudo-labelled in the last round). Classification only: a
    regression has no class confidence to trust."""
    if config.self_training_rounds and config.task != "digits":
        raise ValueError(f"self-training needs class confidences; set self_training_rounds=0 for {config.task}")
    model, history = train_model(images01, labels, config, progress)
    kept = 0.0
    for _ in range(config.self_training_rounds if unlabeled01 is not None else 0):
        probs = predict_proba(model, unlabeled01)
        sure = probs.max(1) >= config.pseudo_label_threshold
        kept = float(sure.mean())
        model, history = train_model(
            images01, labels, config, progress,
            extra_images01=np.repeat(unlabeled01[sure], config.pseudo_label_repeat, axis=0),
            extra_labels=np.repeat(probs.argmax(1)[sure], config.pseudo_label_repeat))
    return model, history, kept


@torch.no_grad()
def predict_proba(model: nn.Module, images01: np.ndarray, batch_size: int = 2048) -> np.ndarray:
    model.eval()
    x = torch.from_numpy(np.asarray(images01, np.float32))[:, None]
    return torch.cat([model(x[i:i + batch_size]).softmax(1) for i in range(0, len(x), batch_size)]).numpy()


def predict(model: nn.Module, images01: np.ndarray) -> np.ndarray:
    return predict_proba(model, images01).argmax(1)


@torch.no_grad()
def predict_gaze(model: nn.Module, images01: np.ndarray, batch_size: int = 2048) -> np.ndarray:
    """(N, 2) pitch, yaw in radians."""
    model.eval()
    x = torch.from_numpy(np.asarray(images01, np.float32))[:, None]
    return torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]).numpy()


def held_out_metric(model: nn.Module, images01: np.ndarray, labels: np.ndarray, task: str) -> float:
    """Accuracy (digits) or mean angular error in degrees (gaze)."""
    if task == "digits":
        return accuracy(predict(model, images01), labels)
    from refiner.gaze import angular_error_deg
    return float(angular_error_deg(predict_gaze(model, images01), labels).mean())


def accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
    return float((np.asarray(predicted) == np.asarray(labels)).mean())


def confusion_matrix(predicted: np.ndarray, labels: np.ndarray, num_classes: int = 10) -> np.ndarray:
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predicted)), 1)
    return matrix


def save_model(model: nn.Module, config: TaskConfig, path) -> None:
    torch.save({"state_dict": model.state_dict(), "config": asdict(config)}, path)


def load_model(path) -> nn.Module:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(checkpoint["config"].get("task", "digits"))
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()
