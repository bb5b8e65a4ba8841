"""train_estimator: the task's estimator on one training set (synthetic or refined) -> its model directory.

Trains ``num_seeds`` models (seeds seed, seed+1, ...): evaluate reports mean and sd over
them. Real data with labels is refused here: only ``evaluate`` touches real labels; the
unlabelled real pool is read for the label-free adaptation when the recipe has one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from refiner import data
from refiner.estimator.checkpoint import save_model
from refiner.estimator.training import train_seeds
from refiner.params import Params
from refiner.tasks import task_for
from refiner.tensors import channels_first
from stages import common

TrainingSet = Literal["synthetic", "refined"]


class Args(common.StageArgs):
    trained_on: TrainingSet = Field(description="which training set this is (names the run and the model)")
    data: Path = Field(description="the training set (a dataset directory)")
    pool: Path = Field(description="the unlabelled real pool, for the adaptation")
    out: Path = Field(description="the model directory to write (one model-seed<N>.pt per seed)")
    history: Path = Field(description="the seeds' mean training curve (CSV)")


def mean_history(runs, metric: str) -> list[dict]:
    """The seeds' mean curve; the held-out score named after the head's metric (val_<metric>)."""
    points = zip(*(run.history for run in runs))
    return [{"step": rows[0]["step"], "train_loss": float(np.mean([r["train_loss"] for r in rows])),
             f"val_{metric}": float(np.mean([r["held_out"] for r in rows]))} for rows in points]


def train_estimator(params: Params, world, training_set: data.ImageDataset, unlabeled: data.ImageDataset | None,
                    out_dir: Path, history_csv: Path, progress: bool = True, desc: str = "train_estimator"):
    """Returns (a SeedRun per seed, the mean history, two training images). Saves each seed's
    model, and with an adaptation also the model before it (``plain-seed*.pt``): evaluate
    measures the refiner alone with those."""
    rows = training_set.load()
    pool = unlabeled.load()["image"] if unlabeled is not None else None
    runs = train_seeds(world.head, rows["image"], world.head.targets(rows), params.train_estimator, params.seed,
                       progress, pool, desc=desc)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*-seed*.pt"):  # a former run's seeds or plain models (the flow reuses the folder)
        stale.unlink()
    for run in runs:
        save_model(run.model, world, rows["image"].shape[1:], run.seed, out_dir / f"model-seed{run.seed}.pt",
                   training_set.digest)
        if run.plain is not run.model:
            save_model(run.plain, world, rows["image"].shape[1:], run.seed, out_dir / f"plain-seed{run.seed}.pt",
                       training_set.digest)
    history = mean_history(runs, world.head.metric.name)
    common.write_csv(history_csv, history)
    return runs, history, channels_first(rows["image"][:2]).numpy()


def no_estimator(out_dir: Path, history_csv: Path) -> None:
    """No estimator fits the task's labels: the outputs DVC expects say so."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*-seed*.pt"):
        stale.unlink()
    (out_dir / "README.md").write_text("No estimator fits this task's labels: evaluate reports label-free figures.\n")
    history_csv.parent.mkdir(parents=True, exist_ok=True)
    history_csv.write_text("step\n")


def run(params: Params, args: Args) -> dict:
    """Trains in staging; the models, their MLflow record and the curve are then committed
    together (``common.committed``; no model: the former record is removed with it)."""
    from refiner import tracking
    with common.committed([args.history, tracking.model_record(args.out), args.out]) as staged:
        return train(params, args.model_copy(update={"out": staged[args.out], "history": staged[args.history]}))


def train(params: Params, args: Args) -> dict:
    import mlflow
    from refiner import tracking
    world, trained_on = task_for(params), args.trained_on
    if world.head is None:
        no_estimator(args.out, args.history)
        print(f"train_estimator@{trained_on}: no estimator fits the labels {world.labels.names}; nothing to train")
        return {f"estimator-{trained_on}": None}
    adapting = params.train_estimator.adaptation != "none"
    logged = {**common.declared_params("train_estimator", params), "trained_on": trained_on}
    with tracking.stage_run(f"train_estimator@{trained_on}", logged) as mlflow_run:
        training_set = data.open_training_set(args.data, world.labels, world.bad_labels)
        tracking.log_dataset(training_set, "input", trained_on)
        unlabeled = data.open_unlabeled(args.pool) if adapting else None
        if unlabeled is not None:
            tracking.log_dataset(unlabeled, "input", "real-unlabeled")
        runs, history, example = train_estimator(params, world, training_set, unlabeled, args.out, args.history,
                                                   desc=f"train_estimator@{trained_on}")
        for entry in history:
            mlflow.log_metrics({k: v for k, v in entry.items() if k != "step"}, step=entry["step"])
        if adapting:
            mlflow.log_metric("pseudo_labelled", float(np.mean([run.history[-1]["pseudo_labelled"] for run in runs])))
        first_seed, first_model = runs[0].seed, runs[0].model  # the registry holds the first seed's model
        tracking.log_model(first_model.eval(), f"estimator-{trained_on}", tracking.ESTIMATOR_MODEL, example,
                           {trained_on: training_set.digest}, args.out,
                           params={"trained_on": trained_on, "seed": first_seed, "task": world.name})
    held_out = float(np.mean([run.history[-1]["held_out"] for run in runs]))
    print(f"train_estimator@{trained_on}: {len(runs)} seeds, held-out {trained_on} {world.head.metric.name} {held_out:.3f}")
    return {f"estimator-{trained_on}": data.file_sha256(args.out / f"model-seed{first_seed}.pt"),
            "mlflow_run_id": mlflow_run.info.run_id}


def main(argv: list[str] | None = None) -> None:
    common.main(run, Args, __doc__, argv)


if __name__ == "__main__":
    main()
