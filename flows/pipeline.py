"""The pipeline as a Prefect 3 flow: the same stage functions DVC runs, in dvc.yaml's order.

    python -m flows.pipeline                                  # local, Prefect's temporary server
    python -m flows.pipeline --set train_refiner.lambda=0.5   # override params.yaml values
    python -m flows.pipeline --ray-address ray://head:10001   # refine on a Ray cluster

The flow's parameter is the typed params object (refiner/params.py), so the Prefect UI
shows a typed form and a bad value is refused before any stage runs, with the key named.
The stages, their arguments (paths), deps and params keys come from dvc.yaml through DVC's
own API, so both ways of running agree on what a stage reads, writes and depends on. A
stage task's cache key is its name, its project, the values of its params keys and DVC's
hash of each dep: a rerun with nothing changed is served from Prefect's cache, as `dvc
repro` skips up-to-date stages, a changed param reruns only what depends on it, and a
stage whose outputs are gone runs again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from contextlib import contextmanager
from pathlib import Path

import tyro
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.context import TaskRunContext
from prefect.runtime import flow_run
from pydantic import BaseModel, Field

from refiner import tracking
from refiner.errors import Refused
from refiner.params import Params, load_params, parse_overrides
from stages import common, evaluate, ingest, refine, render, train_estimator, train_refiner

STAGE_MODULES = {module.__name__: module for module in
                 (render, ingest, train_refiner, refine, train_estimator, evaluate)}
# Stages that can fail for reasons a second try fixes: a Ray cluster losing a node, a
# tracking server or shared filesystem hiccup during a long training run.
RETRIES = {"stages.train_refiner": 1, "stages.refine": 2, "stages.train_estimator": 1, "stages.evaluate": 1}
RETRY_DELAY_SECONDS = 5


def dvc_stage(name: str):
    return next(stage for stage in common.dvc_stages() if stage.name == name)


def dep_hash(dependency) -> str:
    """DVC's own hash of a dep (a directory's tree hash; its state cache makes reruns cheap)."""
    try:
        return dependency.get_hash().value or "missing"
    except Exception:  # a dep that is not there yet: the stage will say what is missing
        return "missing"


def stage_cache_key(context: TaskRunContext, parameters: dict) -> str:
    """The stage, its project (two clones sharing a Prefect home never share results), its
    declared params' values and DVC's hash of each dep."""
    stage, params = dvc_stage(parameters["stage"]), parameters["params"]
    declared = {key: params.section(key) for key in
                dict.fromkeys(["task", "seed", *(key for p in stage.params for key in p.params)])}
    deps = {str(dep.def_path): dep_hash(dep) for dep in stage.deps if dep not in stage.params}
    material = {"stage": stage.name, "project": str(Path.cwd().resolve()), "params": declared, "deps": deps}
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


def outputs_missing(stage) -> bool:
    """A cached result is only as good as the outputs it left: rerun a stage whose outputs are gone."""
    return any(not Path(out.fs_path).exists() for out in stage.outs)


@task(persist_result=True, cache_key_fn=stage_cache_key, log_prints=True)
def run_stage(stage: str, params: Params) -> dict:
    module_name, argv = common.stage_command(dvc_stage(stage))
    module = STAGE_MODULES[module_name]
    return module.run(params, common.parse_args(module.Args, argv, module.__doc__))


def mlflow_ui_base() -> str:
    """The tracking server's UI when there is one, else the local `make ui` address."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    return uri.rstrip("/") if uri.startswith("http") else "http://127.0.0.1:5000"


def report(results: dict[str, dict]) -> str:
    import mlflow
    tracking.setup(Path("."))  # all stages may have come from the cache, none set MLflow up
    base = mlflow_ui_base()
    links = []
    for stage, result in results.items():
        if result.get("mlflow_run_id"):
            experiment = mlflow.get_run(result["mlflow_run_id"]).info.experiment_id
            url = f"{base}/#/experiments/{experiment}/runs/{result['mlflow_run_id']}"
            links.append(f"- [{stage}]({url}) `{result['mlflow_run_id']}`")
    return "\n".join(["# simrefinery: accuracy on real test data", "", results["evaluate"]["table"], "",
                      f"## MLflow runs (local store: `make ui`, then {base})", *links])


DVC_MAIN = re.compile(r"\S*dvc/__main__\.py")  # how a lock names `dvc`: by its module's path


@contextmanager
def workspace_lock():
    """DVC's repository lock (.dvc/tmp/lock) held for the whole flow, so that a `dvc repro`
    started during it is refused; and a flow started during a `dvc repro` is refused at once.
    DVC lets go of its repository lock while a stage's command runs, so a repro mid-stage is
    seen by its stage locks (.dvc/tmp/rwlock), whatever paths they hold: with the stage locks
    alone, a flow started while a repro ran its estimator stages rewrote data/synthetic under
    it (the reliability audit: a mixed workspace)."""
    from dvc.lock import LockError
    repo = common.dvc_stages()[0].repo
    holders = stage_lock_holders(Path(repo.tmp_dir) / "rwlock")
    try:
        if holders:
            raise LockError("held")
        repo.lock.lock()
    except LockError:
        raise Refused(f"the workspace is in use by another DVC process ({'; '.join(holders) or 'DVC: .dvc/tmp/lock'}),"
                      " a running `dvc repro`?; wait for it to finish or stop it") from None
    try:
        yield
    finally:
        repo.lock.unlock()


def stage_lock_holders(rwlock: Path) -> list[str]:
    """The live processes other than this one holding DVC's stage locks: "PID n: command"."""
    import psutil
    try:
        held = json.loads(rwlock.read_text())
    except (OSError, ValueError):
        return []
    entries = [*held.get("write", {}).values(), *(entry for read in held.get("read", {}).values() for entry in read)]
    return sorted({f"PID {entry['pid']}: " + DVC_MAIN.sub("dvc", entry.get("cmd", "?"))
                   for entry in entries if entry.get("pid") != os.getpid() and psutil.pid_exists(entry.get("pid", 0))})


@contextmanager
def stage_lock(stage):
    """DVC's own read/write locks on a stage's deps and outs (.dvc/tmp/rwlock), held while it
    runs, as `dvc repro` holds them for each stage it runs: of a flow and a `dvc repro` (or two
    flows) on one workspace, neither writes what the other reads or writes; the second is
    refused, naming the holder (PID and command). DVC frees a dead holder's entries."""
    from dvc.lock import LockError
    from dvc.rwlock import rwlock
    repo = stage.repo
    held = rwlock(repo.tmp_dir, repo.fs, f"simrefinery flow: {stage.name}", [dep.fs_path for dep in stage.deps],
                  [out.fs_path for out in stage.outs], repo.config["core"].get("hardlink_lock", False))
    try:
        held.__enter__()
    except LockError as err:
        # DVC's message names the stage's last path, not the busy one: name the holders only
        holders = "; ".join(DVC_MAIN.sub("dvc", line.strip())
                            for line in str(err).splitlines() if line.strip().startswith("(PID"))
        raise Refused(f"{stage.name}: what it reads or writes is in use by {holders or str(err)}; wait for it to "
                      "finish or stop it (DVC's locks: .dvc/tmp/rwlock)") from None
    try:
        yield
    finally:
        held.__exit__(None, None, None)


@flow(name="simrefinery-pipeline", log_prints=True)
def pipeline(params: Params | None = None, ray_address: str | None = None, force: bool = False) -> dict[str, dict]:
    """Runs every stage of dvc.yaml in order with ``params`` (default: params.yaml)."""
    params = params if params is not None else load_params()
    if ray_address:
        params = params.model_copy(update={"refine": params.refine.model_copy(update={"ray_address": ray_address})})
    os.environ[tracking.PIPELINE_ID_ENV] = f"prefect-{flow_run.get_id()}"
    results = {}
    with workspace_lock():
        for stage in common.dvc_stages():
            module_name, _ = common.stage_command(stage)
            configured = run_stage.with_options(task_run_name=stage.name, retries=RETRIES.get(module_name, 0),
                                                retry_delay_seconds=RETRY_DELAY_SECONDS,
                                                refresh_cache=force or outputs_missing(stage))
            with stage_lock(stage):
                state = configured(stage.name, params, return_state=True)
            results[stage.name] = {**state.result(), "cached": state.name == "Cached"}
    create_markdown_artifact(report(results), key="simrefinery-evaluation",
                             description="Accuracy on real test data and the MLflow runs behind it")
    return results


class FlowArgs(BaseModel):
    """Run the whole pipeline as a Prefect flow (Prefect's temporary server unless PREFECT_API_URL is set)."""
    set: list[str] = Field(default_factory=list, description="KEY=VALUE params overrides, e.g. train_refiner.lambda=0.5")
    ray_address: str | None = Field(None, description="run the refine stage on this Ray cluster (ray://host:10001)")
    force: bool = Field(False, description="ignore the cache, rerun every stage")


def main(argv: list[str] | None = None) -> None:
    args = tyro.cli(FlowArgs, args=argv, description=__doc__)
    try:
        params = load_params(overrides=parse_overrides(args.set))
    except Refused as err:
        raise SystemExit(f"error: {err}") from None
    try:
        results = pipeline(params=params, ray_address=args.ray_address, force=args.force)
    except Refused as err:
        raise SystemExit(f"error: {err}") from None
    if results["evaluate"]["cached"]:  # else its task just printed the table
        print(results["evaluate"]["table"])


if __name__ == "__main__":
    main()
