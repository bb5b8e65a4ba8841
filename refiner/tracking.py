"""MLflow tracking shared by every stage: one run per stage execution.

Defaults to a SQLite store at the project root (``mlflow.db``) with artifacts in
``mlartifacts/`` beside it (an absolute location, so runs started from any directory put
artifacts in one place). ``MLFLOW_TRACKING_URI`` points it at a server instead, with no
code change. Datasets are logged with the dataset contract's digest: MLflow's automatic
digest ignores binary (image) columns.
"""

from __future__ import annotations

import os
import subprocess
import warnings
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

EXPERIMENT = "simrefinery"


def flatten(params: dict, prefix: str = "") -> dict[str, str]:
    flat = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def git_state(root: Path) -> dict[str, str]:
    def git(*args):
        result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return result.stdout.strip() if result.returncode == 0 else ""
    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"git.commit": commit or "unknown", "git.dirty": str(bool(dirty)).lower()}


def setup(root: Path) -> str:
    """Point MLflow at the project's store and experiment; returns the experiment id."""
    import mlflow
    remote = os.environ.get("MLFLOW_TRACKING_URI")  # read first: set_tracking_uri sets it too
    mlflow.set_tracking_uri(remote or f"sqlite:///{(root / 'mlflow.db').resolve()}")
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        # a server decides where artifacts go; locally, one absolute folder beside the store
        location = None if remote else (root / "mlartifacts").resolve().as_uri()
        return mlflow.create_experiment(EXPERIMENT, artifact_location=location)
    return experiment.experiment_id


@contextmanager
def stage_run(stage: str, params: dict, root: Path | str = "."):
    """An MLflow run for one stage execution, tagged with the code version."""
    import mlflow
    root = Path(root)
    experiment_id = setup(root)
    tags = {"simrefinery.stage": stage, **git_state(root)}
    with mlflow.start_run(experiment_id=experiment_id, run_name=stage, tags=tags) as run:
        mlflow.log_params(flatten(params))
        yield run


def log_dataset(dataset, context: str, name: str) -> None:
    """Record a contract dataset as a run input ("input") or output ("output") by digest and path."""
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    with warnings.catch_warnings():  # "can be interpreted in multiple ways": all of them local paths
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(_relative(dataset.path))
    mlflow.log_input(MetaDataset(source=source, name=name, digest=dataset.digest[:36]),
                     context=context, tags={"simrefinery.digest": dataset.digest})
    mlflow.set_tag(f"simrefinery.{context}.{name}", dataset.digest)


def _relative(path: Path) -> str:
    """Dataset paths relative to the working directory, so no home paths leak into runs."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
