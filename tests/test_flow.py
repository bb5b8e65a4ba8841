"""The Prefect flow: under Prefect's test harness, the same stages as DVC making the same
datasets digest for digest, cached reruns, retries and overrides refused before any work;
then the real prefect.yaml deployed on a real `prefect server` and run by a process worker,
served from the same results."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from refiner import data
from refiner.params import load_params
from tests.helpers import TINY, free_port, make_project, sh

STAGES = ["render", "ingest", "train_refiner", "refine", "train_estimator@synthetic", "train_estimator@refined",
          "evaluate"]
# compared with the digits project's datasets: the flow's project is made once, on the worker that holds it
pytestmark = pytest.mark.xdist_group("digits")
# the digits project's params but for one seed and no oracle: its datasets are the same (no
# dataset depends on train_estimator's or evaluate's params), its estimators cheaper
FLOW_PARAMS = {**TINY, "train_estimator": {**TINY["train_estimator"], "num_seeds": 1},
               "evaluate": {**TINY["evaluate"], "oracle": False}}


def stage_runs(repo) -> list[str]:
    with sqlite3.connect(repo / "mlflow.db") as db:
        return [name for (name,) in db.execute(
            "select r.name from runs r join tags t on r.run_uuid = t.run_uuid "
            "where t.key = 'simrefinery.role' and t.value = 'stage' order by r.start_time")]


@pytest.fixture(scope="module")
def flow_project(tmp_path_factory):
    """(repo, the flow, its first run's results, where Prefect keeps its results): the tiny
    pipeline run once in this process, every stage's result persisted."""
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness
    from flows.pipeline import pipeline
    repo = tmp_path_factory.mktemp("flow-project") / "project"
    repo.mkdir()
    make_project(repo, FLOW_PARAMS)
    results = repo.parent / "prefect-results"
    home = os.getcwd()
    with prefect_test_harness(server_startup_timeout=90), temporary_settings({PREFECT_LOCAL_STORAGE_PATH: results}):
        os.chdir(repo)
        try:
            yield repo, pipeline, pipeline(), results
        finally:
            os.chdir(home)
            import ray
            ray.shutdown()


@pytest.mark.slow
def test_flow_runs_every_stage_in_dvc_order_and_makes_dvcs_datasets(flow_project, dvc_project):
    repo, _, results, _ = flow_project
    assert list(results) == STAGES
    assert stage_runs(repo) == STAGES
    assert "| refined |" in results["evaluate"]["table"]
    from prefect.artifacts import Artifact
    artifact = Artifact.get("simrefinery-evaluation")
    assert "| refined |" in artifact.data
    assert f"/runs/{results['refine']['mlflow_run_id']})" in artifact.data  # a link to the refine run
    by_dvc = dvc_project[3]  # the same params through `dvc repro`, its stages in processes of their own
    assert {name: data.open_dataset(repo / "data" / name).digest for name in by_dvc} == by_dvc


def wait_for(url: str, process, seconds: int) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            assert process.poll() is None, f"{process.args[:3]} exited"
            assert time.monotonic() < deadline, f"{url} did not answer in {seconds} s"
            time.sleep(1)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the process group; SIGKILL it if it is still there a minute later (a loaded
    machine once kept a Prefect worker shutting down longer than that)."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)


@pytest.mark.slow
def test_a_served_deployment_runs_the_pipeline_from_the_same_results(flow_project, tmp_path):
    """prefect server + a process worker, the real prefect.yaml deployed and run in the same
    project: the worker's flow run finds every stage's result under the same cache key
    (project, params, DVC's hashes of the deps), so nothing reruns."""
    repo, _, first, results = flow_project
    before = stage_runs(repo)
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
           "PREFECT_LOCAL_STORAGE_PATH": str(results), "SIMREFINERY_HOME": str(repo),
           "PREFECT_WORKER_QUERY_SECONDS": "1"}  # the worker's default: every 10 s
    env.pop("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", None)
    prefect = str(Path(sys.executable).parent / "prefect")
    server = subprocess.Popen([prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    worker = None
    try:
        wait_for(f"http://127.0.0.1:{port}/api/health", server, 120)
        sh(prefect, "work-pool", "create", "simrefinery-process", "--type", "process", cwd=repo, env=env)
        sh(prefect, "--no-prompt", "deploy", "--name", "nightly", cwd=repo, env=env)
        worker = subprocess.Popen([prefect, "worker", "start", "--pool", "simrefinery-process"], cwd=repo, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        output = sh(prefect, "deployment", "run", "simrefinery-pipeline/nightly", "--watch", "--watch-interval", "1",
                    "--watch-timeout", "600", cwd=repo, env=env, timeout=660)
        assert "Completed" in output
        assert stage_runs(repo) == before  # every stage came from the first run's results
        assert data.open_dataset(repo / "data/refined").digest == first["refine"]["refined"]
    finally:
        for process in (worker, server):
            if process is not None:
                stop(process)


@pytest.mark.slow
def test_rerun_is_served_from_cache_and_a_changed_param_reruns_only_dependents(flow_project, capfd, caplog):
    """Through the flow's command, which prints the result table once: from the evaluate task
    when it runs (into its log: pytest's log capture here, the console outside), from the
    cache's result when it does not."""
    from flows.pipeline import main
    repo, pipeline, first, _ = flow_project
    before = stage_runs(repo)
    again = pipeline()
    assert stage_runs(repo) == before  # nothing ran: every stage came from the cache
    assert again["refine"]["refined"] == first["refine"]["refined"]
    assert again["evaluate"]["cached"] and not first["evaluate"]["cached"]
    for argv, reran in ([], []), (["--set", "train_estimator.steps=40"],  # fewer steps: a cheaper rerun
                                  ["train_estimator@synthetic", "train_estimator@refined", "evaluate"]):
        capfd.readouterr()
        caplog.clear()
        runs = len(stage_runs(repo))
        main(argv)
        assert stage_runs(repo)[runs:] == reran
        printed = capfd.readouterr()
        assert (printed.out + printed.err + caplog.text).count("| trained on |") == 1


@pytest.mark.slow
def test_a_stage_that_fails_once_is_retried(flow_project, monkeypatch):
    repo, pipeline, _, _ = flow_project
    import flows.pipeline as module
    from stages import evaluate
    calls = []
    real_evaluate = evaluate.run

    def flaky_evaluate(params, args):  # injected fault: a transient failure on the first call
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("tracking server went away")
        return real_evaluate(params, args)

    monkeypatch.setattr(evaluate, "run", flaky_evaluate)
    monkeypatch.setattr(module, "RETRY_DELAY_SECONDS", 0)
    results = pipeline(params=load_params(overrides={"evaluate.label_kept_min": 0.7}))  # evaluate reruns
    assert len(calls) == 2 and "| refined |" in results["evaluate"]["table"]


@pytest.mark.slow
@pytest.mark.parametrize("section, message", [
    ({"train_refiner": {"lamda": 1.0}}, r"train_refiner\.lamda"),
    ({"train_refiner": {"steps": "many"}}, r"train_refiner\.steps"),
    ({"task": "hand_pose"}, r"task"),
])
def test_a_bad_flow_parameter_is_refused_before_anything_runs(flow_project, section, message):
    """What a deployment run from the Prefect UI or API sends: JSON, validated against the
    flow's typed params parameter."""
    from prefect.exceptions import ParameterTypeError
    repo, pipeline, _, _ = flow_project
    before = stage_runs(repo)
    with pytest.raises(ParameterTypeError, match=message):
        pipeline(params=section)
    assert stage_runs(repo) == before


@pytest.mark.slow
def test_the_flow_and_dvc_repro_on_one_workspace_the_second_is_refused(flow_project):
    """A real `dvc repro` running a stage that shares no path with the flow's first (the
    reliability audit's case: the flow's render rewrote data/synthetic under it): the flow is
    refused before any stage, by the lock `dvc repro` holds for its whole run (.dvc/tmp/lock),
    and the repro finishes; the flow holding a stage: `dvc repro` of it is refused
    (.dvc/tmp/rwlock). (Last in this module: the forced stage rewrites a model the cached
    reruns above read.)"""
    import psutil
    from flows.pipeline import dvc_stage, stage_lock
    from refiner.errors import Refused
    repo, pipeline, _, _ = flow_project
    stage = "train_estimator@refined"  # reads data/refined and the pool, not what render writes
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}  # dvc.yaml's `python`
    before = stage_runs(repo)
    dvc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "--force", "--single-item", stage], cwd=repo,
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not any("stages.train_estimator" in " ".join(child.cmdline())
                  for child in psutil.Process(dvc.pid).children(recursive=True)):
        assert dvc.poll() is None and time.monotonic() < deadline, "dvc repro never started its stage"
        time.sleep(0.2)
    with pytest.raises(Refused, match=rf"^the workspace is in use by another DVC process \(PID {dvc.pid}: dvc repro --force"):
        pipeline()
    output, _ = dvc.communicate(timeout=300)
    assert dvc.returncode == 0, output
    assert stage_runs(repo)[len(before):] == [stage]  # the repro's own run, none from the flow
    with stage_lock(dvc_stage(stage)):
        refused = subprocess.run([sys.executable, "-m", "dvc", "repro", "--force", "--single-item", stage], cwd=repo,
                                 env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and f"(PID {os.getpid()}): simrefinery flow: {stage}" in refused.stderr
    assert stage_runs(repo)[len(before):] == [stage]
    assert "up to date" in sh(sys.executable, "-m", "dvc", "status", stage, cwd=repo, env=env)  # the lock was let go
