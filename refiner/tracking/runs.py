"""MLflow tracking shared by every stage: one run per stage execution, grouped under one
parent run per pipeline invocation, with the lineage of every dataset and model.

Defaults to a SQLite store at the project root (``mlflow.db``) with artifacts in
``mlartifacts/`` beside it (an absolute location, so runs started from any directory put
artifacts in one place; a copied or moved project's store is pointed at its own copy:
``relocate``). ``MLFLOW_TRACKING_URI`` points it at a server instead, with no code change.

Lineage is recorded as data, not prose:
- a dataset a run reads is a run input (``log_input``) named and digested by the dataset
  contract (MLflow's automatic digest ignores binary image columns); the digest MLflow
  stores is cut to 36 characters, the full one is the input tag ``simrefinery.digest``;
- a dataset a run writes is the run tag ``simrefinery.output.<name> = <digest>``;
- a model is an MLflow logged model (the run's output), registered under a name, and a
  run that uses it lists it as a model input.
``refiner.tracking.lineage`` (``simrefinery lineage``) walks these links back from any dataset, run or model.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

from refiner.data import storage

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

EXPERIMENT = "simrefinery"
PIPELINE_ID_ENV = "SIMREFINERY_PIPELINE_ID"  # set by `make run` and the Prefect flow: one parent per invocation
OUTPUT_TAG = "simrefinery.output."


def flatten(params: dict, prefix: str = "") -> dict[str, str]:
    flat = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def params_hash(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:16]


# what a run of the pipeline itself rewrites among the files git tracks: a change there is a
# result, not a change to the code or params that made it
PIPELINE_RESULTS = ("dvc.lock", "metrics", "plots")


def git_state(root: Path) -> dict[str, str]:
    """The commit, and whether code or params differ from it (``git.dirty``; the pipeline's
    own results, ``PIPELINE_RESULTS``, do not count: every run rewrites them)."""
    def git(*args):
        result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return result.stdout.strip() if result.returncode == 0 else ""
    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".",
                *(f":(exclude){path}" for path in PIPELINE_RESULTS))
    return {"git.commit": commit or "unknown", "git.dirty": str(bool(dirty)).lower(), **source_url(git("remote", "get-url", "origin"))}


def source_url(origin: str) -> dict[str, str]:
    """MLflow's ``mlflow.source.git.repoURL`` tag, which it fills with the checkout's origin:
    a clone of a local path would record that machine path on every run and logged model, so
    only a URL is kept (a local origin: the tag is empty)."""
    return {"mlflow.source.git.repoURL": origin if "://" in origin or "@" in origin else ""}


def use_store(root: Path) -> str | None:
    """Point MLflow at the project's store (``MLFLOW_TRACKING_URI`` where set: a server);
    returns that server's URI, or None for the project's own SQLite store."""
    import mlflow
    remote = os.environ.get("MLFLOW_TRACKING_URI")  # read first: set_tracking_uri sets it too
    mlflow.set_tracking_uri(remote or f"sqlite:///{(root / 'mlflow.db').resolve()}")
    return remote


def setup(root: Path) -> str:
    """Point MLflow at the project's store and experiment; returns the experiment id."""
    import mlflow
    remote = use_store(root)
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    if experiment is not None and not remote:
        relocate(root, experiment.artifact_location)
    if experiment is None:
        # a server decides where artifacts go; locally, one absolute folder beside the store
        location = None if remote else (root / "mlartifacts").resolve().as_uri()
        # the kind tag opens it in the UI's training view (untagged, MLflow 3 shows its GenAI traces view)
        return mlflow.create_experiment(EXPERIMENT, artifact_location=location,
                                        tags={"mlflow.experimentKind": "custom_model_development"})
    return experiment.experiment_id


# where the SQL store keeps artifact URIs (MLflow resolves each local location to an absolute one)
ARTIFACT_URIS = {"experiments": "artifact_location", "runs": "artifact_uri", "logged_models": "artifact_location",
                 "model_versions": "storage_location"}


def relocate(root: Path, recorded: str) -> None:
    """A project copied or moved with its store: point the store's artifact URIs at this
    copy's ``mlartifacts/``, else its runs would write into (and read from) the original's.
    MLflow has no API to move an experiment's artifacts, so this rewrites the URI prefix in
    the SQL store's own tables (once: afterwards the recorded location is this one)."""
    import sqlite3
    here = (root / "mlartifacts").resolve().as_uri()
    if recorded == here or not (recorded.startswith("file://") and recorded.endswith("/mlartifacts")):
        return
    with sqlite3.connect(root / "mlflow.db") as store:
        for table, column in ARTIFACT_URIS.items():
            store.execute(f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                          f"WHERE substr({column}, 1, ?) = ?", (here, len(recorded) + 1, len(recorded), recorded))
    print(f"mlflow.db: artifacts moved from {recorded} to {here} (the project was copied or moved)", file=sys.stderr)


def pipeline_id(root: Path) -> str:
    """The invocation this stage belongs to. `make run` and the Prefect flow set one per
    invocation; a bare `dvc repro` groups by code version and params.yaml instead."""
    if os.environ.get(PIPELINE_ID_ENV):
        return os.environ[PIPELINE_ID_ENV]
    state = git_state(root)
    params = (root / "params.yaml").read_text() if (root / "params.yaml").exists() else ""
    return hashlib.sha256(f"{state['git.commit']}{state['git.dirty']}{params}".encode()).hexdigest()[:16]


def pipeline_parent(experiment_id: str, root: Path) -> str:
    """Find or create the parent run of this pipeline invocation."""
    import mlflow
    client = mlflow.MlflowClient()
    key = pipeline_id(root)
    found = client.search_runs([experiment_id], max_results=1, filter_string=(
        f"tags.`simrefinery.pipeline` = '{key}' and tags.`simrefinery.role` = 'pipeline'"))
    if found:
        return found[0].info.run_id
    tags = {"simrefinery.pipeline": key, "simrefinery.role": "pipeline", **git_state(root)}
    # `simrefinery run`'s time to the second or the flow run's id, whole; a bare `dvc repro`'s hash, cut
    name = f"pipeline-{key}" if os.environ.get(PIPELINE_ID_ENV) else f"pipeline-{key[:8]}"
    return client.create_run(experiment_id, run_name=name, tags=tags).info.run_id


@contextmanager
def stage_run(stage: str, params: dict, root: Path | str = ".", grouped: bool = True):
    """An MLflow run for one stage execution, a child of its pipeline invocation's run
    (``grouped``; else a run of its own, as a command outside the pipeline makes). It
    ends FINISHED, FAILED on an error, KILLED on Ctrl-C or SIGTERM; a run whose process
    died without a word (SIGKILL, power loss) is marked KILLED when the next stage starts."""
    import mlflow
    root = Path(root)
    experiment_id = setup(root)
    end_dead_runs(experiment_id)
    parent = pipeline_parent(experiment_id, root) if grouped else None
    tags = {"simrefinery.stage": stage, **({"dvc.stage": stage} if grouped else {}), "simrefinery.role": "stage",
            "simrefinery.params_hash": params_hash(params), **git_state(root), **_process_tags(),
            "mlflow.source.name": _relative(Path(sys.argv[0]))}  # MLflow would record the absolute path
    previous = signal.signal(signal.SIGTERM, _interrupt) if _main_thread() else None
    started = int(time.time() * 1000)
    try:
        with mlflow.start_run(experiment_id=experiment_id, run_name=stage, tags=tags, parent_run_id=parent) as run:
            mlflow.log_params(flatten(params))
            yield run
    except KeyboardInterrupt:
        # wherever the signal landed (MLflow has ended the run FAILED, or is still creating it)
        end_own_runs(experiment_id, started, "KILLED")
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if parent is not None:
            mlflow.MlflowClient().set_terminated(parent)  # the parent shows the time of its latest stage


@contextmanager
def command_run(command: str, params: dict):
    """A run of its own (no pipeline parent) for a command run in a project, so `simrefinery
    lineage` finds what it made; yields whether it logs: outside a project (no ``mlflow.db``,
    no ``MLFLOW_TRACKING_URI``) nothing is logged and no store is made."""
    if not (Path("mlflow.db").is_file() or os.environ.get("MLFLOW_TRACKING_URI")):
        yield False
        return
    with stage_run(command, params, grouped=False):
        yield True


def _main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()  # signal handlers: main thread only


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _process_tags() -> dict[str, str]:
    import socket
    return {"simrefinery.host": socket.gethostname(), "simrefinery.pid": str(os.getpid())}


def end_own_runs(experiment_id: str, since_ms: int, status: str) -> None:
    """End this process's stage runs started since ``since_ms`` with ``status``."""
    import mlflow
    tags = _process_tags()
    client = mlflow.MlflowClient()
    for run in client.search_runs([experiment_id], max_results=100, filter_string=(
            f"attributes.start_time >= {since_ms} and tags.`simrefinery.role` = 'stage' and "
            f"tags.`simrefinery.host` = '{tags['simrefinery.host']}' and tags.`simrefinery.pid` = '{tags['simrefinery.pid']}'")):
        client.set_terminated(run.info.run_id, status)


def end_dead_runs(experiment_id: str) -> list[str]:
    """Mark KILLED the RUNNING stage runs of this host whose process is gone (or is another
    process now, started after the run): what a SIGKILL leaves behind."""
    import mlflow
    import psutil
    client, host, dead = mlflow.MlflowClient(), _process_tags()["simrefinery.host"], []
    for run in client.search_runs([experiment_id], max_results=1000, filter_string=(
            f"attributes.status = 'RUNNING' and tags.`simrefinery.role` = 'stage' and tags.`simrefinery.host` = '{host}'")):
        pid = int(run.data.tags.get("simrefinery.pid", "0"))
        try:
            alive = psutil.Process(pid).create_time() * 1000 <= run.info.start_time
        except (psutil.NoSuchProcess, ValueError):
            alive = False
        if not alive:
            client.set_terminated(run.info.run_id, "KILLED")
            dead.append(run.info.run_id)
    return dead


def log_dataset(dataset, context: str, name: str) -> None:
    """Record a contract dataset the run reads ("input") or writes ("output")."""
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    if context == "output":
        mlflow.set_tag(f"{OUTPUT_TAG}{name}", dataset.digest)
    with warnings.catch_warnings():  # "can be interpreted in multiple ways": all of them local paths
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(_relative(dataset.path))
    # MLflow keeps one record per (name, digest): the same bytes read from another place keep
    # the first source, so each input also says where this run read it
    mlflow.log_input(MetaDataset(source=source, name=name, digest=dataset.digest[:36]), context=context,
                     tags={"simrefinery.digest": dataset.digest, "simrefinery.location": _relative(dataset.path)})


def log_model(model, name: str, registered_name: str, example, training_data: dict[str, str],
              out_dir: Path, params: dict | None = None, extra_files: list[Path] | None = None) -> dict:
    """Log and register a torch model (``extra_files`` beside it, in its ``extra_files/``); link
    it to its training data by digest. Writes its
    MLflow ids to ``model_record(out_dir)`` so later stages can name it as an input: beside
    the model directory, not in it, so the DVC output holds the weights only and a retrain
    that reproduces them leaves the stages downstream up to date."""
    import mlflow
    import numpy as np
    import torch
    info = mlflow.pytorch.log_model(
        model, name=name, registered_model_name=registered_name,
        input_example=np.asarray(example), pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
        params={k: str(v) for k, v in (params or {}).items()}, extra_files=[str(f) for f in extra_files or []],
        tags={"registered_model": registered_name, "mlflow.source.name": _relative(Path(sys.argv[0])),
              **{key: value for key, value in git_state(Path(".")).items() if key.startswith("mlflow.")},
              **{f"training_data.{k}": v for k, v in training_data.items()}})
    record = {"model_id": info.model_id, "model_uri": info.model_uri, "registered_model": registered_name,
              "version": str(info.registered_model_version), "run_id": mlflow.active_run().info.run_id}
    model_record(out_dir).write_text(json.dumps(record, indent=2) + "\n")
    return record


def logged_model_id(client, uri: str) -> str:
    """The logged model of models:/<name>@<alias>, models:/<name>/<version> or models:/<model id>."""
    name_ref = uri[len("models:/"):]
    if "@" in name_ref:
        version = client.get_model_version_by_alias(*name_ref.split("@", 1))
    elif "/" in name_ref:
        version = client.get_model_version(*name_ref.split("/", 1))
    else:
        return name_ref
    # a version registered from a logged model has source models:/<model id>
    return version.model_id or version.source[len("models:/"):]


def model_record(model_dir: Path) -> Path:
    """models/refiner -> models/refiner.mlflow.json (the MLflow ids of the model saved there)."""
    return Path(model_dir).with_name(f"{Path(model_dir).name}.mlflow.json")


def log_model_input(model: Path | str) -> dict | None:
    """Name as an input of the active run the model saved in the directory ``model`` (by the
    record beside it), or a registered one (``models:/<name>@<alias>``, ``models:/<name>/<version>``)."""
    import mlflow
    from mlflow.entities import LoggedModelInput
    if str(model).startswith("models:/"):
        record = {"model_id": logged_model_id(mlflow.MlflowClient(), str(model)), "model_uri": str(model)}
        record_path = model
    else:
        record_path = model_record(Path(model))
        if not record_path.exists():
            return None
        record = json.loads(record_path.read_text())
    try:
        mlflow.log_input(model=LoggedModelInput(record["model_id"]))
    except mlflow.exceptions.MlflowException as err:  # a model from another tracking store
        warnings.warn(f"{record_path}: model {record['model_id']} not in this tracking store ({err})", stacklevel=2)
        return None
    return record


def _relative(path: Path | str) -> str:
    """Dataset paths relative to the working directory, so no home paths leak into runs
    (an s3:// URI is recorded as it is)."""
    if storage.is_remote(path):
        return path
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
