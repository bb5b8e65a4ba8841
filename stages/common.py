"""What every stage shares: params.yaml, the artifact paths of dvc.yaml, and figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

PARAMS_FILE = Path("params.yaml")

SYNTHETIC = Path("data/synthetic")
REAL_UNLABELED = Path("data/real/unlabeled")
REAL_TEST = Path("data/real/test")
REFINED = Path("data/refined")
REFINER_DIR = Path("models/refiner")
REFINER_CHECKPOINT = REFINER_DIR / "refiner.pt"
METRICS = Path("metrics")
PLOTS = Path("plots")


def task_model_dir(trained_on: str) -> Path:
    return Path("models") / f"task-{trained_on}"


TRAINING_SETS = {"synthetic": SYNTHETIC, "refined": REFINED}


TASKS = ("digits", "gaze")


def load_params(path: Path = PARAMS_FILE) -> dict:
    params = yaml.safe_load(path.read_text())
    if params.get("task") not in TASKS:
        raise SystemExit(f"{path}: task {params.get('task')!r} is not one of {TASKS}")
    if params["task"] == "gaze" and params["train_task"].get("self_training_rounds"):
        raise SystemExit(f"{path}: task gaze needs train_task.self_training_rounds=0 (pseudo-labels need class "
                         "confidences); `make run PROFILE=gaze` sets it and the gaze sizes")
    return params


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_csv(path: Path, rows: list[dict]) -> None:
    import csv
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def image_grid(path: Path, rows: dict[str, np.ndarray], columns: int = 16, title: str = "") -> Path:
    """One row of images per name (e.g. synthetic | refined | real), values in [0, 1]."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(rows), columns, figsize=(columns * 0.6, len(rows) * 0.75), squeeze=False)
    for r, (name, images) in enumerate(rows.items()):
        for c in range(columns):
            axis = axes[r, c]
            axis.axis("off")
            if c < len(images):
                axis.imshow(images[c], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes[r, 0].set_title(name, loc="left", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path
