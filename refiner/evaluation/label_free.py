"""The label-free figures: what chooses params, checkpoints and champions (``label_free``,
``selection_score``). No real label goes into them; the figures a real label went into are
``refiner.evaluation.scoring``'s, for people to read."""

from __future__ import annotations

import numpy as np

from refiner.config import EstimatorParams
from refiner.estimator.training import balanced_pseudo_labels, predict, train_model
from refiner.evaluation.report import PerSet, Report


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


def class_realism(head, synthetic_models: list, training_sets: dict[str, tuple[np.ndarray, np.ndarray]],
                  real_pool01: np.ndarray, seed: int, min_images: int = 10) -> dict | None:
    """Realism class by class: for each class, how well a fresh logistic regression tells the
    training set's images of that class from the real pool's images of that class (0.5 =
    indistinguishable), averaged with the pool's class shares as weights. The pool's classes
    are the synthetic-trained estimators' (before adaptation) pseudo-labels balanced to the
    synthetic class shares (``balanced_pseudo_labels``): no real label. A refined 3 must look
    like the pool's 3s, not merely like some real digit; a refiner that turns 3s into 8s or
    into prototypes of 3 is told apart. None for tasks without classes."""
    if not head.has_classes:
        return None
    prior = np.bincount(training_sets["synthetic"][1], minlength=head.num_classes)
    probabilities = np.mean([predict(head, model, real_pool01) for model in synthetic_models], axis=0)
    pool_classes = balanced_pseudo_labels(probabilities, prior)
    result = {}
    for name, (images, classes) in training_sets.items():
        scores, weights = [], []
        for k in range(head.num_classes):
            real, fake = real_pool01[pool_classes == k], images[classes == k]
            if min(len(real), len(fake)) >= min_images:  # too few to split in half and fit
                scores.append(realism(fake, real, seed + k))
                weights.append(len(real))
        result[name] = float(np.average(scores, weights=weights))
    return result


def label_kept(head, synthetic_models: list, training_sets: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict:
    """Did refinement keep the labels? The estimators trained on synthetic data score the
    synthetic images and their refined versions against the (synthetic) labels. A refiner that
    changes what an image shows (mode collapse, too small a lambda) scores worse on the second."""
    return {name: float(np.mean([head.score(predict(head, model, images), targets) for model in synthetic_models]))
            for name, (images, targets) in training_sets.items()}


# the reverse models rank estimators, they need not be good ones: a quarter of the recipe's steps.
# With the whole recipe they were most of evaluate (about 15 of its 22 minutes on a 3,000-frame
# world: its 6 models, 3 a training set, cost what train_estimator's 6 cost; experiments/README.md)
REVERSE_SHARE = 0.25


def reverse_score(head, models: list, real_pool01: np.ndarray, synthetic: tuple[np.ndarray, np.ndarray],
                  recipe: EstimatorParams, seed: int) -> float:
    """Reverse validation (Zhong et al., ECML 2010), oriented so higher is better: each model
    labels the unlabelled real pool; a fresh estimator trained on those labels alone is scored
    on the labelled *synthetic* images. Right labels on the real pool make a reverse model that
    scores well back home; a model that is only sure of itself does not. No real label is read.
    The reverse models train ``REVERSE_SHARE`` of the recipe's steps."""
    recipe = recipe.model_copy(update={"adaptation": "none", "steps": max(1, int(recipe.steps * REVERSE_SHARE))})
    images, targets = synthetic
    scores = []
    for offset, model in enumerate(models):
        pseudo = head.as_targets(predict(head, model, real_pool01))
        reverse, _ = train_model(head, real_pool01, pseudo, recipe, seed + offset, progress=False)
        scores.append(head.score(predict(head, reverse, images), targets))
    return float(np.mean(scores)) if head.metric.higher_is_better else -float(np.mean(scores))


def label_free(head, task_models: dict[str, list], plain_models: dict[str, list],
               training_sets: dict[str, tuple[np.ndarray, np.ndarray]], real_pool01: np.ndarray,
               recipe: EstimatorParams, seed: int, kept_sets: dict | None = None) -> dict[str, PerSet | None]:
    """Everything used to choose params, checkpoints and champions: no real label in it.
    ``plain_models``: the estimators before self-training (the refiner's effect alone);
    ``kept_sets``: the images ``label_kept`` scores, where not the training sets (a camera
    refiner's scenes before its camera: stages/evaluate.py)."""
    classes = class_realism(head, plain_models["synthetic"], training_sets, real_pool01, seed)
    return {"realism": PerSet(**realism_per_set(training_sets, real_pool01, seed)),
            "class_realism": PerSet(**classes) if classes is not None else None,
            "label_kept": PerSet(**label_kept(head, task_models["synthetic"], kept_sets or training_sets)),
            "real_confidence": PerSet(**{name: head.confidence([predict(head, model, real_pool01) for model in models])
                                         for name, models in task_models.items()}),
            "reverse_score": PerSet(**{name: reverse_score(head, models, real_pool01, training_sets["synthetic"],
                                                           recipe, seed) for name, models in plain_models.items()})}


def realism_per_set(training_sets: dict[str, tuple[np.ndarray, np.ndarray | None]], real_pool01: np.ndarray,
                    seed: int) -> dict[str, float]:
    return {name: realism(images, real_pool01, seed) for name, (images, _) in training_sets.items()}


def selection_score(report: Report, label_kept_min: float) -> float | None:
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
        return -report.class_realism.refined
    if report.label_kept is None:  # no estimator: nothing to choose by
        return None
    synthetic, refined = report.label_kept.synthetic, report.label_kept.refined
    kept = refined >= label_kept_min * synthetic if report.higher_is_better else refined * label_kept_min <= synthetic
    return report.reverse_score.refined if kept else None


def selection_rule(report: Report) -> str:
    """The rule ``selection_score`` applies to this report (scores of two rules do not compare)."""
    return "class_realism" if report.class_realism is not None else "reverse_validation"
