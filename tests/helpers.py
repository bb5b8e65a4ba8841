"""What the tests share (fixtures are in conftest.py): tiny params, a copy of the project in a
fresh git + DVC repo, a stage's command from dvc.yaml, real servers on 127.0.0.1."""

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TORCH_THREADS = torch.get_num_threads()  # what a stage process the tests start uses (OMP_NUM_THREADS)

# Params small enough for a whole pipeline run in about a minute on 2 cores.
TINY = {
    "render": {"num_images": 200},
    "train_refiner": {"channels": 8, "num_blocks": 2, "disc_layers": [[8, 1], [8, 1]], "batch_size": 32,
                      "pretrain_refiner_steps": 60, "pretrain_disc_steps": 5, "lr": 0.003, "steps": 10,
                      "semantic_steps": 60,
                      "history_size": 64, "log_every": 5},
    "refine": {"batch_size": 64, "num_actors": 1},  # one actor's start-up, not two (two: tests/test_refine.py)
    "train_estimator": {"steps": 80, "eval_every": 40, "batch_size": 64, "num_seeds": 2, "self_training_rounds": 1,
                        "teacher_steps": 40},
    # the gate of tasks without classes: 200 images and 2 seeds measure label keeping to a few
    # points only, a looser gate lets a tiny run promote a champion (the gate: test_stages)
    "evaluate": {"label_kept_min": 0.8},
}

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
BUCKET = "simrefinery"


def world(name: str):
    """A registered world built from the committed params (fixed worlds need nothing of them)."""
    from refiner.params import load_params
    from refiner.tasks import WORLDS
    return WORLDS[name](load_params(ROOT / "params.yaml"))


def uint8_images(n, shape=(8, 8), seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def sh(*args, cwd, env, check=True, timeout=600):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result.stdout + result.stderr


def stage_command(name: str, root: Path = ROOT) -> list[str]:
    """The command dvc.yaml runs for stage ``name`` (e.g. refine, train_estimator@refined)."""
    from stages.common import dvc_stages, stage_command as command
    module, args = command(next(stage for stage in dvc_stages(root) if stage.name == name))
    return [sys.executable, "-m", module, *args]


def make_project(repo: Path, params_update: dict, extra_files: dict[str, str] | None = None) -> dict:
    """Copy the project's tracked files into ``repo`` (a new git repo) with updated params
    (a section not in params.yaml is added) and ``extra_files`` (path -> text); returns the
    environment to run its commands in."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file() and not name.startswith(("metrics/", "plots/", "dvc.lock", "benchmarks/results/")):
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for section, values in params_update.items():
        if isinstance(values, dict):
            params.setdefault(section, {}).update(values)
        else:
            params[section] = values  # a top-level scalar such as task
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for name, text in (extra_files or {}).items():
        (repo / name).write_text(text)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    for leaked in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS", "RAY_AUTH_MODE", "SIMREFINERY_PIPELINE_ID"):
        env.pop(leaked, None)
    sh("git", "init", "-q", cwd=repo, env=env)
    sh("git", "config", "user.email", "ci@example.com", cwd=repo, env=env)
    sh("git", "config", "user.name", "ci", cwd=repo, env=env)
    sh("git", "add", "-A", cwd=repo, env=env)
    sh("git", "commit", "-qm", "tiny", cwd=repo, env=env)
    sh("git", "remote", "add", "origin", str(ROOT), cwd=repo, env=env)  # as `git clone <this checkout>` sets it
    return env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(cwd: Path, env: dict, *stores: str):
    """A real `mlflow server` on 127.0.0.1 with the given store options, in its own process
    group (stopped with it); yields its URL once it answers."""
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "server", *stores, "--host", "127.0.0.1",
                               "--port", str(port), "--workers", "1"], cwd=cwd, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                assert server.poll() is None, "mlflow server exited"
                assert time.monotonic() < deadline, "mlflow server did not answer in 90 s"
                time.sleep(1)
        yield url
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def joining(ray) -> dict:
    """The variables that make a process join the tests' local Ray (a second local cluster
    would cost a start-up and share the same two cores): its address, and Ray's token
    authentication (the token: the file the local Ray wrote under ~/.ray)."""
    return {"RAY_ADDRESS": ray.get_runtime_context().gcs_address, "RAY_AUTH_MODE": "token"}


def job_env(ray) -> dict:
    """The environment of a job in a process of its own, joining the tests' local Ray."""
    return {**os.environ, "PYTHONPATH": str(ROOT), **joining(ray)}


# The refine job in a process of its own, with a slow writer (an injected fault), so a kill
# or a second writer lands mid-job: python -c KILLED_JOB SOURCE CHECKPOINT OUT
KILLED_JOB = """
import sys, time
from refiner import data
from refiner.simgan import refine_job
write_part = data.DatasetWriter.write_part
def slow_write_part(self, index, table):  # injected fault: a slow writer, so the kill lands mid-job
    write_part(self, index, table)
    time.sleep(0.5)  # six parts after the second: 3 s for a kill or a second writer to land
data.DatasetWriter.write_part = slow_write_part
refine_job.refine_dataset(data.open_dataset(sys.argv[1]), sys.argv[2], sys.argv[3], batch_size=16,
                          num_actors=1, progress=False)
"""
