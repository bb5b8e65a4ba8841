"""Scoring estimators on real data, and the label-free figures that choose among refiners.

Two kinds of figure, kept apart on purpose:
- reported: each training set's estimators scored on the real *labelled* test split
  (``score``); only the evaluate stage computes these, for people to read;
- label-free: what chooses params, checkpoints and champions (``label_free``,
  ``selection_score``); no real label goes into them.
"""

from __future__ import annotations

import numpy as np

from refiner.estimator import predict
from refiner.tasks.base import Task


def score(task: Task, models: list, images01: np.ndarray, targets: np.ndarray) -> dict:
    """The task's metric: mean and sd over the models (one per seed), per seed, of their
    ensemble (mean prediction), plus the task's details (confusion, per-sample errors...)."""
    predictions = [predict(task, model, images01) for model in models]
    per_seed = [task.score(p, targets) for p in predictions]
    name = task.metric.name
    return {name: float(np.mean(per_seed)), f"{name}_sd": float(np.std(per_seed)), f"{name}_per_seed": per_seed,
            f"ensemble_{name}": task.score(np.mean(predictions, axis=0), targets),
            **task.details(predictions, targets)}


def for_json(result: dict) -> dict:
    """A result without its long lists (confusion matrices, per-sample errors: those go to plots)."""
    return {key: value for key, value in result.items() if not isinstance(value, list) or key.endswith("_per_seed")}


def gain(task: Task, results: dict[str, dict]) -> float:
    """How much better the estimators trained on refined data score on real data than those
    trained on synthetic data (positive: refinement helped, whichever way the metric runs)."""
    name = task.metric.name
    difference = results["refined"][name] - results["synthetic"][name]
    return difference if task.metric.higher_is_better else -difference


def realism(fake01: np.ndarray, real01: np.ndarray, seed: int) -> float:
    """Held-out accuracy of a fresh logistic regression telling fake from real by pixels:
    0.5 means indistinguishable. Uses no labels; equal numbers of each, split in half."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    n = min(len(fake01), len(real01))
    rng = np.random.default_rng(seed)
    fake = fake01[rng.choice(len(fake01), n, replace=False)].reshape(n, -1)
    real = real01[rng.choice(len(real01), n, replace=False)].reshape(n, -1)
    x, y = np.concatenate([fake, real]), np.r_[np.zeros(n), np.ones(n)]
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.5, stratify=y, random_state=seed)
    return float(LogisticRegression(max_iter=2000).fit(x_train, y_train).score(x_test, y_test))


def label_kept(task: Task, synthetic_models: list, training_sets: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict:
    """Did refinement keep the labels? The estimators trained on synthetic data score the
    synthetic images and their refined versions against the (synthetic) labels. A refiner that
    changes what an image shows (mode collapse, too small a lambda) scores worse on the second."""
    return {name: float(np.mean([task.score(predict(task, model, images), targets) for model in synthetic_models]))
            for name, (images, targets) in training_sets.items()}


def label_free(task: Task, task_models: dict[str, list], training_sets: dict[str, tuple[np.ndarray, np.ndarray]],
               real_pool01: np.ndarray, seed: int) -> dict:
    """Everything used to choose params, checkpoints and champions: no real label in it."""
    return {"realism": {name: realism(images, real_pool01, seed) for name, (images, _) in training_sets.items()},
            "label_kept": label_kept(task, task_models["synthetic"], training_sets),
            "real_confidence": {name: task.confidence([predict(task, model, real_pool01) for model in models])
                                for name, models in task_models.items()}}


def selection_score(report: dict, label_kept_min: float, higher_is_better: bool = True) -> float | None:
    """The label-free rule that chooses profiles (experiments/sweep.py) and champions: a
    refiner that kept the labels (its refined images keep ``label_kept_min`` of the synthetic
    images' score under the synthetic-trained estimators) scores its estimators' confidence on
    real images; one that lost them is not eligible (None).
    Checked against the renderer variants of the accuracy sweep (experiments/README.md):
    real-pool confidence ranked them as test accuracy did; realism did not (it rewards size
    fixes, not shapes)."""
    synthetic, refined = report["label_kept"]["synthetic"], report["label_kept"]["refined"]
    kept = refined >= label_kept_min * synthetic if higher_is_better else refined * label_kept_min <= synthetic
    return report["real_confidence"]["refined"] if kept else None


def table(task: Task, results: dict[str, dict]) -> str:
    """The markdown result table: one row per training set."""
    name, cell = task.metric.name, task.metric.cell.format
    seeds = len(next(iter(results.values()))[f"{name}_per_seed"])
    lines = [f"| trained on | {task.metric.title} (mean ± sd, {seeds} seeds) | ensemble of the {seeds} |",
             "|---|---|---|"]
    lines += [f"| {trained_on} | {cell(r[name])} ± {cell(r[f'{name}_sd'])} | {cell(r[f'ensemble_{name}'])} |"
              for trained_on, r in results.items()]
    return "\n".join(lines)
