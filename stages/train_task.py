"""train_task <synthetic|refined>: one CNN recipe on one training set -> models/task-<name>/.

Real data is refused here: only ``evaluate`` touches real labels.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from refiner import dataset
from refiner.task import TaskConfig, save_classifier, train_classifier
from stages import common


def load_training_set(path: Path) -> dict:
    data = dataset.open_dataset(path)
    sources = {data.manifest["producer"]}
    if "stages.ingest" in sources:
        raise dataset.DatasetError(f"{path}: real data must not train the task model (only evaluate reads real labels)")
    if "label" not in data.label_columns:
        raise dataset.DatasetError(f"{path}: has no 'label' column to train on")
    return data.load()


def train_task(train_path: Path, config: TaskConfig, out_dir: Path, plots_dir: Path, progress: bool = True):
    rows = load_training_set(train_path)
    model, history = train_classifier(rows["image"], rows["label"], config, progress=progress)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_classifier(model, config, out_dir / "model.pt")
    common.write_csv(plots_dir / "history.csv", history)
    return model, history


def main() -> None:
    import mlflow
    from refiner import tracking
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("trained_on", choices=sorted(common.TRAINING_SETS))
    trained_on = parser.parse_args().trained_on
    params = common.load_params()
    config = TaskConfig(**params["train_task"], seed=params["seed"])
    train_path = common.TRAINING_SETS[trained_on]
    with tracking.stage_run(f"train_task@{trained_on}", {**params["train_task"], "seed": params["seed"],
                                                         "trained_on": trained_on}):
        tracking.log_dataset(dataset.open_dataset(train_path), "input", trained_on)
        _, history = train_task(train_path, config, common.task_model_dir(trained_on),
                                common.PLOTS / f"task-{trained_on}")
        for entry in history:
            mlflow.log_metrics({k: v for k, v in entry.items() if k != "epoch"}, step=entry["epoch"])
        mlflow.log_artifact(str(common.task_model_dir(trained_on) / "model.pt"), "model")
    print(f"train_task@{trained_on}: held-out {trained_on} accuracy {history[-1]['val_accuracy']:.3f}")


if __name__ == "__main__":
    main()
