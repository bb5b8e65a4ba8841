"""The estimator's label-free adaptation, recipe by recipe, on the datasets a `make run` left.

    python -m experiments.adaptation [--seeds 0 1 2] [--recipes none self_training mean_teacher ...] [--sets refined]
    python -m experiments.adaptation --profile gaze --recipes none mean_teacher   # after `make run PROFILE=gaze`

For each recipe (``train_estimator.adaptation`` and its settings) and each training set
(synthetic, refined): the seeds' estimators, their reverse score (the label-free rule that
chooses, experiments/README.md) and, for the report only, their accuracy on the real test
split. Writes experiments/results/adaptation-<source>.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import yaml

from refiner import data
from refiner.estimator.training import predict, train_seeds
from refiner.evaluation.label_free import reverse_score
from refiner.params import load_params
from refiner.tasks import task_for

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {  # name -> train_estimator overrides
    "none": {"adaptation": "none"},
    "self_training": {"adaptation": "self_training"},
    "mean_teacher": {"adaptation": "mean_teacher"},
    "mean_teacher_unbalanced": {"adaptation": "mean_teacher", "class_balanced": False},
    "mean_teacher_all": {"adaptation": "mean_teacher", "pseudo_label_threshold": 0.0},
    "mean_teacher_long": {"adaptation": "mean_teacher", "teacher_steps": 2000},
    "mean_teacher_threshold_0.8": {"adaptation": "mean_teacher", "pseudo_label_threshold": 0.8},
}


def pool_agreement(head, models, pool01: np.ndarray, labelled_classes: np.ndarray) -> dict:
    """Label-free candidates for a better rule than the reverse score (lab notes only): how often
    the seeds' estimators agree on a pool image's class, and how far the pool's predicted class
    shares (the seeds' mean prediction) lie from the labelled set's (total variation)."""
    probabilities = np.stack([predict(head, model, pool01) for model in models])
    classes, ensemble = probabilities.argmax(2), probabilities.mean(0).argmax(1)
    num_classes = max(int(labelled_classes.max()), int(classes.max())) + 1
    shares = np.bincount(ensemble, minlength=num_classes) / len(ensemble)
    prior = np.bincount(labelled_classes.astype(int), minlength=num_classes) / len(labelled_classes)
    return {"pool_agreement": float((classes == classes[0]).all(0).mean()),
            "class_share_gap": float(0.5 * np.abs(shares - prior).sum())}


def measure(recipe: str, seeds: list[int], params, world, sets: dict, synthetic: tuple, pool01: np.ndarray, test01,
            test_targets) -> dict:
    head, out = world.head, {}
    config = params.train_estimator.model_copy(update={**RECIPES[recipe], "num_seeds": 1})
    for name, (images01, targets) in sets.items():
        started, models = time.perf_counter(), []
        for seed in seeds:
            models += [run.model for run in train_seeds(head, images01, targets, config, seed, False, pool01)]
        seconds = (time.perf_counter() - started) / len(seeds)
        reverse = reverse_score(head, models, pool01, synthetic, params.train_estimator, seeds[0])
        accuracy = [head.score(predict(head, model, test01), test_targets) for model in models]
        out[name] = {"reverse_score": reverse, "accuracy": accuracy, "mean": float(np.mean(accuracy)),
                     "sd": float(np.std(accuracy)), "seconds_per_seed": seconds,
                     **(pool_agreement(head, models, pool01, targets) if head.has_classes else {})}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--sets", nargs="+", default=["synthetic", "refined"], choices=["synthetic", "refined"])
    parser.add_argument("--data", type=Path, default=ROOT / "data")
    parser.add_argument("--name", help="the results file's draw name (default: the task; e.g. optdigits, mnist)")
    parser.add_argument("--profile", help="a profiles.yaml entry the datasets were made with (e.g. gaze)")
    args = parser.parse_args(argv)
    overrides = yaml.safe_load((ROOT / "profiles.yaml").read_text())[args.profile] if args.profile else None
    params = load_params(ROOT / "params.yaml", overrides)
    world = task_for(params)
    sets = {}
    for name in dict.fromkeys(["synthetic", *args.sets]):  # synthetic: the reverse score goes back to it
        rows = data.open_dataset(args.data / name).load()
        sets[name] = (rows["image"], world.head.targets(rows))
    trained = {name: sets[name] for name in args.sets}
    pool01 = data.open_dataset(args.data / "real/unlabeled").load()["image"]
    test = data.open_dataset(args.data / "real/test").load()
    test_targets = world.head.targets(test)
    results = {}
    for recipe in args.recipes:
        results[recipe] = measure(recipe, args.seeds, params, world, trained, sets["synthetic"], pool01, test["image"],
                                  test_targets)
        cell = world.head.metric.cell.format
        for name, r in results[recipe].items():
            agreement = f"agree {r['pool_agreement']:.3f} share gap {r['class_share_gap']:.3f}  " if "pool_agreement" in r else ""
            print(f"{recipe:26s} {name:9s} reverse {r['reverse_score']:.4f}  {agreement}test {cell(r['mean'])} ± "
                  f"{cell(r['sd'])}  {r['seconds_per_seed']:.0f} s/seed", flush=True)
    source = args.name or params.task
    sets_named = "" if len(args.sets) == 2 else "-" + args.sets[0]
    out = ROOT / "experiments" / "results" / f"adaptation-{source}-seeds{'-'.join(map(str, args.seeds))}{sets_named}.json"
    out.write_text(json.dumps({"seeds": args.seeds, "results": results}, indent=1) + "\n")
    print(out)


if __name__ == "__main__":
    main()
