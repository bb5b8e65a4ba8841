"""What every stage shares: the artifact paths of dvc.yaml, which params each stage
declares there, params loading for ``main()``, and small writers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import yaml

from refiner.dataset import DatasetError
from refiner.params import Params, ParamsError, load_params
from refiner.simgan import CheckpointError

DVC_FILE = Path("dvc.yaml")
SYNTHETIC = Path("data/synthetic")
REAL_UNLABELED = Path("data/real/unlabeled")
REAL_TEST = Path("data/real/test")
POOL_LABELS = Path("data/real/pool_labels.parquet")  # the pool's labels, where known: evaluate's oracle only
REFINED = Path("data/refined")
REFINER_DIR = Path("models/refiner")
REFINER_CHECKPOINT = REFINER_DIR / "refiner.pt"
METRICS = Path("metrics")
PLOTS = Path("plots")
TRAINING_SETS = {"synthetic": SYNTHETIC, "refined": REFINED}


def estimator_dir(trained_on: str) -> Path:
    return Path("models") / f"estimator-{trained_on}"


def stage_specs(dvc_file: Path = DVC_FILE) -> dict[str, dict]:
    """dvc.yaml's stages in order, `foreach` expanded to name@item: {function, item, deps, params}."""
    specs = {}
    for name, stage in yaml.safe_load(dvc_file.read_text())["stages"].items():
        for item in stage.get("foreach", [None]):
            body = stage.get("do", stage)
            specs[f"{name}@{item}" if item else name] = {
                "function": name, "item": item,
                "deps": [dep.replace("${item}", item) if item else dep for dep in body.get("deps", [])],
                "params": [p if isinstance(p, str) else next(iter(p)) for p in body.get("params", [])]}
    return specs


def declared_params(stage: str, params: Params) -> dict:
    """The params keys dvc.yaml declares for ``stage`` (``${task}``: the task's own section),
    plus task and seed: what the stage's MLflow run logs and what its Prefect cache key holds."""
    spec = next(spec for name, spec in stage_specs().items() if stage in (name, spec["function"]))
    keys = [key.replace("${task}", params.task) for key in spec["params"]]
    return {key: params.section(key) for key in dict.fromkeys(["task", "seed", *keys])}


def main(run, *args) -> None:
    """A stage's ``main()``: ``run(params.yaml's params, *args)``. A refused input (a bad
    params key, a dataset or source breaking the contract, an unusable checkpoint) ends the
    process with one line naming the file and the problem, not a traceback."""
    try:
        run(load_params(), *args)
    except (ParamsError, DatasetError, CheckpointError) as err:
        raise SystemExit(f"error: {err}") from None


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
