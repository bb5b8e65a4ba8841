"""Figures a real label went into: each training set's estimators on the real labelled test
split, and the gains that refinement buys (only the evaluate stage computes these, for
people to read; nothing chooses by them)."""

from __future__ import annotations

import numpy as np

from refiner.estimator.training import predict
from refiner.evaluation.report import BaselineGain, Gain, RefineryGain, Score


def score(head, models: list, images01: np.ndarray, targets: np.ndarray) -> Score:
    """The head's metric: mean and sd over the models (one per seed), per seed, of their
    ensemble (mean prediction), with the head's details (confusion, per-sample errors...)."""
    predictions = [predict(head, model, images01) for model in models]
    per_seed = [head.score(p, targets) for p in predictions]
    return Score(mean=float(np.mean(per_seed)), sd=float(np.std(per_seed)), per_seed=per_seed,
                 ensemble=head.score(np.mean(predictions, axis=0), targets), **head.details(predictions, targets))


def improvement(head, synthetic: float, refined: float) -> float:
    """How much better refined scored than synthetic (positive: refinement helped, whichever
    way the metric runs)."""
    return refined - synthetic if head.metric.higher_is_better else synthetic - refined


def paired_gain(head, synthetic: list[float], refined: list[float]) -> Gain:
    """The gain paired by seed (seed s trained on refined against seed s on synthetic)."""
    paired = [improvement(head, s, r) for s, r in zip(synthetic, refined)]
    return Gain(gain=float(np.mean(paired)), gain_sd=float(np.std(paired)), gain_per_seed=paired)


def end_to_end_gain(head, results: dict[str, Score]) -> Gain:
    """The paired gain of the end-to-end estimators (adapted, when the recipe says so)."""
    return paired_gain(head, results["synthetic"].per_seed, results["refined"].per_seed)


def refinery_gain(head, plain: dict[str, list], images01: np.ndarray, targets: np.ndarray) -> RefineryGain:
    """What the refiner alone buys: the same recipe without adaptation, trained on refined
    vs on synthetic data, scored on real labelled images, paired by seed."""
    scores = {name: [head.score(predict(head, model, images01), targets) for model in models]
              for name, models in plain.items()}
    return RefineryGain(synthetic=float(np.mean(scores["synthetic"])), synthetic_sd=float(np.std(scores["synthetic"])),
                        refined=float(np.mean(scores["refined"])), refined_sd=float(np.std(scores["refined"])),
                        **paired_gain(head, scores["synthetic"], scores["refined"]).model_dump())


def adaptation_gain(head, results: dict[str, Score], plain: dict[str, list], images01: np.ndarray,
                    targets: np.ndarray) -> dict[str, Gain]:
    """What the label-free adaptation buys on each training set: its end-to-end estimators
    against the same seeds' estimators before it, paired by seed (0 when the recipe has none)."""
    return {name: paired_gain(head, [head.score(predict(head, model, images01), targets) for model in models],
                              results[name].per_seed) for name, models in plain.items()}


def baseline_gain(head, training_sets: dict[str, tuple[np.ndarray, np.ndarray]], images01: np.ndarray,
                  targets: np.ndarray) -> BaselineGain:
    """The head's scikit-learn baseline trained on each training set's Parquet images and
    scored on real labelled ones: the refined dataset as a product for someone else's model."""
    scores = {}
    for name, (train_images, train_targets) in training_sets.items():
        model = head.baseline().fit(train_images.reshape(len(train_images), -1), train_targets)
        scores[name] = head.score(head.baseline_predictions(model, images01.reshape(len(images01), -1)), targets)
    return BaselineGain(model=type(head.baseline()).__name__, synthetic=scores["synthetic"], refined=scores["refined"],
                        gain=improvement(head, scores["synthetic"], scores["refined"]))
