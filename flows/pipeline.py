"""The pipeline as a Prefect 3 flow: the same stage functions DVC runs, in dvc.yaml's order.

    python -m flows.pipeline                                  # local, Prefect's temporary server
    python -m flows.pipeline --set train_refiner.lambda=0.5   # override params.yaml values
    python -m flows.pipeline --ray-address ray://head:10001   # refine on a Ray cluster

The flow's parameter is the typed params object (refiner/params.py), so the Prefect UI
shows a typed form and a bad value is refused before any stage runs, with the key named.
The stage list, each stage's deps and params keys come from dvc.yaml, so both ways of
running agree on what a stage depends on. A stage task's cache key is its name, the values
of its params keys and a fingerprint of each dep (a dataset's contract digest, a file's
SHA-256, a directory's hash): a rerun with nothing changed is served from Prefect's cache,
as `dvc repro` skips up-to-date stages, and a changed param reruns only what depends on it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.context import TaskRunContext
from prefect.runtime import flow_run

from refiner import tracking
from refiner.dataset import MANIFEST, file_sha256, manifest_digest
from refiner.params import Params, ParamsError, load_params
from stages import common, evaluate, ingest, refine, render, train_estimator, train_refiner
from stages.common import stage_specs

STAGE_FUNCTIONS = {"render": render.run, "ingest": ingest.run, "train_refiner": train_refiner.run,
                   "refine": refine.run, "train_estimator": train_estimator.run, "evaluate": evaluate.run}
# Stages that can fail for reasons a second try fixes: a Ray cluster losing a node, a
# tracking server or shared filesystem hiccup during a long training run.
RETRIES = {"train_refiner": 1, "refine": 2, "train_estimator": 1, "evaluate": 1}
RETRY_DELAY_SECONDS = 5


def fingerprint(path: Path) -> str:
    """What a dep is, by content: the contract digest of a dataset, else a hash of the bytes."""
    if (path / MANIFEST).is_file():
        return manifest_digest(json.loads((path / MANIFEST).read_text()))
    if path.is_file():
        return file_sha256(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return hashlib.sha256("".join(f"{p.relative_to(path)}:{file_sha256(p)}" for p in files).encode()).hexdigest()
    return "missing"


def stage_cache_key(context: TaskRunContext, parameters: dict) -> str:
    stage, params = parameters["stage"], parameters["params"]
    spec = stage_specs()[stage]
    material = {"stage": stage, "params": common.declared_params(spec["function"], params),
                "deps": {dep: fingerprint(Path(dep)) for dep in spec["deps"]}}
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


@task(persist_result=True, cache_key_fn=stage_cache_key, log_prints=True)
def run_stage(stage: str, params: Params) -> dict:
    spec = stage_specs()[stage]
    function = STAGE_FUNCTIONS[spec["function"]]
    return function(params, spec["item"]) if spec["item"] else function(params)


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


@flow(name="simrefinery-pipeline", log_prints=True)
def pipeline(params: Params | None = None, ray_address: str | None = None, force: bool = False) -> dict[str, dict]:
    """Runs every stage of dvc.yaml in order with ``params`` (default: params.yaml)."""
    params = params if params is not None else load_params()
    if ray_address:
        params = params.model_copy(update={"refine": params.refine.model_copy(update={"ray_address": ray_address})})
    os.environ[tracking.PIPELINE_ID_ENV] = f"prefect-{flow_run.get_id()}"
    results = {}
    for stage, spec in stage_specs().items():
        configured = run_stage.with_options(task_run_name=stage, retries=RETRIES.get(spec["function"], 0),
                                            retry_delay_seconds=RETRY_DELAY_SECONDS, refresh_cache=force)
        results[stage] = configured(stage, params)
    create_markdown_artifact(report(results), key="simrefinery-evaluation",
                             description="Accuracy on real test data and the MLflow runs behind it")
    return results


def parse_override(text: str) -> tuple[str, Any]:
    key, _, value = text.partition("=")
    return key, yaml.safe_load(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a params.yaml value")
    parser.add_argument("--ray-address", help="run the refine stage on this Ray cluster")
    parser.add_argument("--force", action="store_true", help="ignore the cache, rerun every stage")
    args = parser.parse_args()
    try:
        params = load_params(overrides=dict(map(parse_override, args.set)))
    except ParamsError as err:
        raise SystemExit(f"error: {err}") from None
    results = pipeline(params=params, ray_address=args.ray_address, force=args.force)
    print(results["evaluate"]["table"])


if __name__ == "__main__":
    main()
