"""train_task <synthetic|refined>: one CNN recipe on one training set -> models/task-<name>/.

Trains ``num_seeds`` models (seeds seed, seed+1, ...): under domain shift the spread over
seeds is as large as the effects being measured, so evaluate reports mean and sd.
Real data is refused here: only ``evaluate`` touches real labels.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np

from refiner import dataset
from refiner.task import LABEL_COLUMNS, VAL_METRIC, TaskConfig, save_model, self_train, targets
from stages import common
from stages.train_refiner import load_unlabeled


def task_config(params: dict) -> tuple[TaskConfig, int]:
    """(the recipe, how many seeds) from params.yaml."""
    section = dict(params["train_task"])
    num_seeds = section.pop("num_seeds")
    return TaskConfig(**section, seed=params["seed"], task=params["task"]), num_seeds


def load_training_set(path: Path, task: str = "digits") -> dict:
    data = dataset.open_dataset(path)
    if data.manifest["producer"] == "stages.ingest":
        raise dataset.DatasetError(f"{path}: real data must not train the task model (only evaluate reads real labels)")
    missing = [c for c in LABEL_COLUMNS[task] if c not in data.label_columns]
    if missing:
        raise dataset.DatasetError(f"{path}: has no {missing} label column(s) to train the {task} task on")
    return data.load()


def train_seeds(images, labels, config: TaskConfig, num_seeds: int, progress: bool = True, unlabeled=None):
    """[(config, model, history)] for seeds config.seed, config.seed + 1, ...; with
    ``unlabeled`` real images, self-training as the config says (refiner/task.py)."""
    runs = []
    for offset in range(num_seeds):
        seed_config = replace(config, seed=config.seed + offset)
        model, history, pseudo_labelled = self_train(images, labels, unlabeled, seed_config, progress=progress)
        history[-1]["pseudo_labelled"] = pseudo_labelled
        runs.append((seed_config, model, history))
    return runs


def mean_history(runs) -> list[dict]:
    points = zip(*(history for _, _, history in runs))
    return [{"step": rows[0]["step"], **{key: float(np.mean([r[key] for r in rows]))
                                         for key in rows[0] if key not in ("step", "pseudo_labelled")}}
            for rows in points]


def train_task(train_path: Path, config: TaskConfig, num_seeds: int, out_dir: Path, plots_dir: Path,
               unlabeled_path: Path | None = None, progress: bool = True):
    """Returns ([(config, model, history)] per seed, the mean history, two training images).
    ``unlabeled_path``: real images without labels, for self-training (when the config asks)."""
    rows = load_training_set(train_path, config.task)
    unlabeled = None
    if config.self_training_rounds and unlabeled_path is not None:
        unlabeled = load_unlabeled(unlabeled_path).load()["image"]
    runs = train_seeds(rows["image"], targets(rows, config.task), config, num_seeds, progress, unlabeled)
    out_dir.mkdir(parents=True, exist_ok=True)
    for seed_config, model, _ in runs:
        save_model(model, seed_config, out_dir / f"model-seed{seed_config.seed}.pt")
    history = mean_history(runs)
    common.write_csv(plots_dir / "history.csv", history)
    return runs, history, rows["image"][:2, None].astype("float32")


def run(params: dict, trained_on: str) -> dict:
    import mlflow
    from refiner import tracking
    config, num_seeds = task_config(params)
    train_path = common.TRAINING_SETS[trained_on]
    out_dir = common.task_model_dir(trained_on)
    with tracking.stage_run(f"train_task@{trained_on}", {**params["train_task"], "seed": params["seed"],
                                                         "trained_on": trained_on}) as mlflow_run:
        training_set = dataset.open_dataset(train_path)
        tracking.log_dataset(training_set, "input", trained_on)
        if config.self_training_rounds:
            tracking.log_dataset(dataset.open_dataset(common.REAL_UNLABELED), "input", "real-unlabeled")
        runs, history, example = train_task(train_path, config, num_seeds, out_dir,
                                            common.PLOTS / f"task-{trained_on}", common.REAL_UNLABELED)
        for entry in history:
            mlflow.log_metrics({k: v for k, v in entry.items() if k != "step"}, step=entry["step"])
        if config.self_training_rounds:
            mlflow.log_metric("pseudo_labelled", float(np.mean([h[-1]["pseudo_labelled"] for _, _, h in runs])))
        first_config, first_model, _ = runs[0]  # the registry holds the first seed's model
        tracking.log_model(first_model.eval(), f"task-{trained_on}", tracking.TASK_MODEL, example,
                           {trained_on: training_set.digest}, out_dir,
                           params={"trained_on": trained_on, "seed": first_config.seed})
    metric = VAL_METRIC[config.task]
    print(f"train_task@{trained_on}: {num_seeds} seeds, held-out {trained_on} {metric} {history[-1][metric]:.3f}")
    return {f"task-{trained_on}": dataset.file_sha256(out_dir / f"model-seed{config.seed}.pt"),
            "mlflow_run_id": mlflow_run.info.run_id}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("trained_on", choices=sorted(common.TRAINING_SETS))
    run(common.load_params(), parser.parse_args().trained_on)


if __name__ == "__main__":
    main()
