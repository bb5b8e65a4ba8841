"""Scoring estimators on real data, and the label-free figures that choose among refiners.

Two kinds of figure, kept apart on purpose:
- reported: each training set's estimators scored on the real *labelled* test split
  (``score``); only the evaluate stage computes these, for people to read;
- label-free: what chooses params, checkpoints and champions (``label_free``,
  ``selection_score``); no real label goes into them.
"""

from __future__ import annotations

import numpy as np

from refiner.config import EstimatorParams
from refiner.estimator import balanced_pseudo_labels, predict, train_model
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


def improvement(task: Task, synthetic: float, refined: float) -> float:
    """How much better refined scored than synthetic (positive: refinement helped, whichever
    way the metric runs)."""
    return refined - synthetic if task.metric.higher_is_better else synthetic - refined


def paired_gain(task: Task, synthetic: list[float], refined: list[float]) -> dict:
    """The gain paired by seed (seed s trained on refined against seed s on synthetic)."""
    paired = [improvement(task, s, r) for s, r in zip(synthetic, refined)]
    return {"gain": float(np.mean(paired)), "gain_sd": float(np.std(paired)), "gain_per_seed": paired}


def end_to_end_gain(task: Task, results: dict[str, dict]) -> dict:
    """The paired gain of the end-to-end estimators (self-training on, when the recipe says so)."""
    name = task.metric.name
    return paired_gain(task, results["synthetic"][f"{name}_per_seed"], results["refined"][f"{name}_per_seed"])


def refinery_gain(task: Task, plain: dict[str, list], images01: np.ndarray, targets: np.ndarray) -> dict:
    """What the refiner alone buys: the same recipe without self-training, trained on refined
    vs on synthetic data, scored on real labelled images, paired by seed."""
    scores = {name: [task.score(predict(task, model, images01), targets) for model in models]
              for name, models in plain.items()}
    return {"synthetic": float(np.mean(scores["synthetic"])), "synthetic_sd": float(np.std(scores["synthetic"])),
            "refined": float(np.mean(scores["refined"])), "refined_sd": float(np.std(scores["refined"])),
            **paired_gain(task, scores["synthetic"], scores["refined"])}


def baseline_gain(task: Task, training_sets: dict[str, tuple[np.ndarray, np.ndarray]], images01: np.ndarray,
                  targets: np.ndarray) -> dict | None:
    """The task's scikit-learn baseline trained on each training set's Parquet images and
    scored on real labelled ones: the refined dataset as a product for someone else's model."""
    models = {name: task.baseline() for name in training_sets}
    if None in models.values():
        return None
    scores = {}
    for name, (train_images, train_targets) in training_sets.items():
        model = models[name].fit(train_images.reshape(len(train_images), -1), train_targets)
        scores[name] = task.score(task.baseline_predictions(model, images01.reshape(len(images01), -1)), targets)
    return {**scores, "gain": improvement(task, scores["synthetic"], scores["refined"]),
            "model": type(models["refined"]).__name__}


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


def class_realism(task: Task, synthetic_models: list, training_sets: dict[str, tuple[np.ndarray, np.ndarray]],
                  real_pool01: np.ndarray, seed: int, min_images: int = 10) -> dict | None:
    """Realism class by class: for each class, how well a fresh logistic regression tells the
    training set's images of that class from the real pool's images of that class (0.5 =
    indistinguishable), averaged with the pool's class shares as weights. The pool's classes
    are the synthetic-trained estimators' (self-training off) pseudo-labels balanced to the
    synthetic class shares (``balanced_pseudo_labels``): no real label. A refined 3 must look
    like the pool's 3s, not merely like some real digit; a refiner that turns 3s into 8s or
    into prototypes of 3 is told apart. None for tasks without classes."""
    if not task.can_pseudo_label:
        return None
    prior = np.bincount(training_sets["synthetic"][1], minlength=task.num_classes)
    probabilities = np.mean([predict(task, model, real_pool01) for model in synthetic_models], axis=0)
    pool_classes = balanced_pseudo_labels(probabilities, prior)
    result = {}
    for name, (images, classes) in training_sets.items():
        scores, weights = [], []
        for k in range(task.num_classes):
            real, fake = real_pool01[pool_classes == k], images[classes == k]
            if min(len(real), len(fake)) >= min_images:  # too few to split in half and fit
                scores.append(realism(fake, real, seed + k))
                weights.append(len(real))
        result[name] = float(np.average(scores, weights=weights))
    return result


def label_kept(task: Task, synthetic_models: list, training_sets: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict:
    """Did refinement keep the labels? The estimators trained on synthetic data score the
    synthetic images and their refined versions against the (synthetic) labels. A refiner that
    changes what an image shows (mode collapse, too small a lambda) scores worse on the second."""
    return {name: float(np.mean([task.score(predict(task, model, images), targets) for model in synthetic_models]))
            for name, (images, targets) in training_sets.items()}


def reverse_score(task: Task, models: list, real_pool01: np.ndarray, synthetic: tuple[np.ndarray, np.ndarray],
                  recipe: EstimatorParams, seed: int) -> float:
    """Reverse validation (Zhong et al., ECML 2010), oriented so higher is better: each model
    labels the unlabelled real pool; a fresh estimator trained on those labels alone is scored
    on the labelled *synthetic* images. Right labels on the real pool make a reverse model that
    scores well back home; a model that is only sure of itself does not. No real label is read."""
    recipe = recipe.model_copy(update={"self_training_rounds": 0})
    images, targets = synthetic
    scores = []
    for offset, model in enumerate(models):
        pseudo = task.as_targets(predict(task, model, real_pool01))
        reverse, _ = train_model(task, real_pool01, pseudo, recipe, seed + offset, progress=False)
        scores.append(task.score(predict(task, reverse, images), targets))
    return float(np.mean(scores)) if task.metric.higher_is_better else -float(np.mean(scores))


def label_free(task: Task, task_models: dict[str, list], plain_models: dict[str, list],
               training_sets: dict[str, tuple[np.ndarray, np.ndarray]], real_pool01: np.ndarray,
               recipe: EstimatorParams, seed: int) -> dict:
    """Everything used to choose params, checkpoints and champions: no real label in it.
    ``plain_models``: the estimators before self-training (the refiner's effect alone)."""
    return {"realism": {name: realism(images, real_pool01, seed) for name, (images, _) in training_sets.items()},
            "class_realism": class_realism(task, plain_models["synthetic"], training_sets, real_pool01, seed),
            "label_kept": label_kept(task, task_models["synthetic"], training_sets),
            "real_confidence": {name: task.confidence([predict(task, model, real_pool01) for model in models])
                                for name, models in task_models.items()},
            "reverse_score": {name: reverse_score(task, models, real_pool01, training_sets["synthetic"], recipe, seed)
                              for name, models in plain_models.items()}}


def selection_score(report: dict, label_kept_min: float, higher_is_better: bool = True) -> float | None:
    """The label-free rule that chooses profiles (experiments/sweep.py) and champions.
    Classification (rule 4): the refined images' class-conditional realism, lower is better
    (``class_realism``; the score is its negative), with no gate: a refiner that changes
    digits or draws prototypes is told apart from the pool's images of the class it claims.
    Tasks without classes (rule 2): a refiner that kept the labels (its refined images keep
    ``label_kept_min`` of the synthetic images' score under the synthetic-trained estimators)
    scores the reverse validation of its estimators (``reverse_score``); one that lost them is
    not eligible (None). Rule 2 chose for classification too until rule 4 beat it on draws
    nobody had run (optdigits at another seed, 5000 unseen MNIST digits): it measures agreement
    with the synthetic domain, which a refiner should leave. experiments/README.md: each rule,
    how it was checked, its figures."""
    if selection_rule(report) == "class_realism":
        return -report["class_realism"]["refined"]
    synthetic, refined = report["label_kept"]["synthetic"], report["label_kept"]["refined"]
    kept = refined >= label_kept_min * synthetic if higher_is_better else refined * label_kept_min <= synthetic
    return report["reverse_score"]["refined"] if kept else None


def selection_rule(report: dict) -> str:
    """The rule ``selection_score`` applies to this report (scores of two rules do not compare)."""
    return "class_realism" if report.get("class_realism") else "reverse_validation"


def table(task: Task, results: dict[str, dict], gain: dict, end_to_end: dict, baseline: dict | None) -> str:
    """The markdown result table: the refiner alone (self-training off), end to end, and a
    scikit-learn model, each trained on synthetic and on refined data; the paired gains; the oracle."""
    name, cell = task.metric.name, task.metric.cell.format
    seeds = len(results["synthetic"][f"{name}_per_seed"])
    baseline_title = f"scikit-learn {baseline['model']}" if baseline else "scikit-learn"
    lines = [f"{task.metric.title}, mean ± sd over {seeds} seeds:", "",
             f"| trained on | estimator, self-training off | estimator + self-training (end to end) | {baseline_title} |",
             "|---|---|---|---|"]
    for trained_on in ("synthetic", "refined"):
        r = results[trained_on]
        lines.append(f"| {trained_on} | {cell(gain[trained_on])} ± {cell(gain[trained_on + '_sd'])} "
                     f"| {cell(r[name])} ± {cell(r[name + '_sd'])} | {cell(baseline[trained_on]) if baseline else '-'} |")
    lines.append(f"| **refinery gain** (refined − synthetic, paired by seed) | **{_signed(cell, gain['gain'])} ± "
                 f"{cell(gain['gain_sd'])}** | {_signed(cell, end_to_end['gain'])} ± {cell(end_to_end['gain_sd'])} "
                 f"| {_signed(cell, baseline['gain']) if baseline else '-'} |")
    if "oracle" in results:
        r = results["oracle"]
        lines.append(f"| oracle: real labels (reference only) | | {cell(r[name])} ± {cell(r[name + '_sd'])} | |")
    return "\n".join(lines)


def label_free_table(report: dict, why: str) -> str:
    """The result table when nothing can be scored on real labels: says why, and what is measured."""
    lines = [f"{why}: label-free figures only (no real label read).", "",
             "| figure | synthetic | refined |", "|---|---|---|",
             "| realism (real-vs-fake logistic regression, 0.5 = indistinguishable) | "
             f"{report['realism']['synthetic']:.3f} | {report['realism']['refined']:.3f} |"]
    if "label_kept" in report:
        lines.append(f"| label kept (synthetic-trained estimators, {report['metric']}) | "
                     f"{report['label_kept']['synthetic']:.3f} | {report['label_kept']['refined']:.3f} |")
    lines.append(f"| diversity (refined spread / synthetic spread) | 1 | {report['diversity_ratio']:.3f} |")
    return "\n".join(lines)


def _signed(cell, value: float) -> str:
    return ("+" if value >= 0 else "−") + cell(abs(value))
