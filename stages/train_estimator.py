"""train_estimator <synthetic|refined>: the task's estimator on one training set -> models/estimator-<name>/.

Trains ``num_seeds`` models (seeds seed, seed+1, ...): evaluate reports mean and sd over
them. Real data with labels is refused here: only ``evaluate`` touches real labels; the
unlabelled real pool is read for self-training when it is on.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from refiner import dataset
from refiner.estimator import save_model, train_seeds
from refiner.networks import channels_first
from refiner.params import Params
from refiner.tasks import task_for
from stages import common


def mean_history(runs) -> list[dict]:
    points = zip(*(run.history for run in runs))
    return [{"step": rows[0]["step"], **{key: float(np.mean([r[key] for r in rows]))
                                         for key in rows[0] if key not in ("step", "pseudo_labelled")}}
            for rows in points]


def train_estimator(params: Params, training_set: dataset.ImageDataset, unlabeled: dataset.ImageDataset | None,
                    out_dir: Path, plots_dir: Path, progress: bool = True):
    """Returns (a SeedRun per seed, the mean history, two training images). Saves each seed's
    model, and with self-training on also the model before it (``plain-seed*.pt``): evaluate
    measures the refiner alone with those."""
    task = task_for(params)
    rows = training_set.load()
    pool = unlabeled.load()["image"] if unlabeled is not None else None
    runs = train_seeds(task, rows["image"], task.targets(rows), params.train_estimator, params.seed, progress, pool)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*-seed*.pt"):  # a former run's seeds or plain models (the flow reuses the folder)
        stale.unlink()
    for run in runs:
        save_model(run.model, task, rows["image"].shape[1:], run.seed, out_dir / f"model-seed{run.seed}.pt")
        if run.plain is not run.model:
            save_model(run.plain, task, rows["image"].shape[1:], run.seed, out_dir / f"plain-seed{run.seed}.pt")
    history = mean_history(runs)
    common.write_csv(plots_dir / "history.csv", history)
    return runs, history, channels_first(rows["image"][:2]).numpy()


def no_estimator(out_dir: Path, plots_dir: Path) -> None:
    """No estimator fits the task's labels: the outputs DVC expects say so."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*-seed*.pt"):
        stale.unlink()
    (out_dir / "README.md").write_text("No estimator fits this task's labels: evaluate reports label-free figures.\n")
    plots_dir.mkdir(parents=True, exist_ok=True)
    (plots_dir / "history.csv").write_text("step\n")


def run(params: Params, trained_on: str) -> dict:
    import mlflow
    from refiner import tracking
    task = task_for(params)
    out_dir = common.estimator_dir(trained_on)
    if not task.learns_labels:
        from refiner import tracking
        no_estimator(out_dir, common.PLOTS / f"estimator-{trained_on}")
        tracking.model_record(out_dir).unlink(missing_ok=True)  # no model: no lineage to a former one
        print(f"train_estimator@{trained_on}: no estimator fits the labels {task.labels.names}; nothing to train")
        return {f"estimator-{trained_on}": None}
    self_training = params.train_estimator.self_training_rounds > 0
    logged = {**common.declared_params("train_estimator", params), "trained_on": trained_on}
    with tracking.stage_run(f"train_estimator@{trained_on}", logged) as mlflow_run:
        training_set = dataset.open_training_set(common.TRAINING_SETS[trained_on], task.labels, task.bad_labels)
        tracking.log_dataset(training_set, "input", trained_on)
        unlabeled = dataset.open_unlabeled(common.REAL_UNLABELED) if self_training else None
        if unlabeled is not None:
            tracking.log_dataset(unlabeled, "input", "real-unlabeled")
        runs, history, example = train_estimator(params, training_set, unlabeled, out_dir,
                                                 common.PLOTS / f"estimator-{trained_on}")
        for entry in history:
            mlflow.log_metrics({k: v for k, v in entry.items() if k != "step"}, step=entry["step"])
        if self_training:
            mlflow.log_metric("pseudo_labelled", float(np.mean([run.history[-1]["pseudo_labelled"] for run in runs])))
        first_seed, first_model = runs[0].seed, runs[0].model  # the registry holds the first seed's model
        tracking.log_model(first_model.eval(), f"estimator-{trained_on}", tracking.ESTIMATOR_MODEL, example,
                           {trained_on: training_set.digest}, out_dir,
                           params={"trained_on": trained_on, "seed": first_seed, "task": task.name})
    metric = f"val_{task.metric.name}"
    print(f"train_estimator@{trained_on}: {len(runs)} seeds, held-out {trained_on} {metric} {history[-1][metric]:.3f}")
    return {f"estimator-{trained_on}": dataset.file_sha256(out_dir / f"model-seed{first_seed}.pt"),
            "mlflow_run_id": mlflow_run.info.run_id}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("trained_on", choices=sorted(common.TRAINING_SETS))
    trained_on = parser.parse_args().trained_on
    common.main(run, trained_on)


if __name__ == "__main__":
    main()
