import contextlib
import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
# Prefect: a throwaway home, no analytics (else a 'database is locked' traceback), slow CI
import tempfile  # noqa: E402
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="prefect-home-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

DEFAULT_TORCH_THREADS = torch.get_num_threads()  # what a stage process uses
torch.set_num_threads(1)


@pytest.fixture
def tiny_digits():
    """A small rendered synthetic set: ids, 0..16 images, labels."""
    from refiner.tasks.digits.renderer import render_digits
    return render_digits(40, seed=3, progress=False)


@pytest.fixture(scope="session")
def local_ray():
    import ray
    # "local": a new instance, never a cluster some other test or user started with `ray start`
    ray.init(address="local", num_cpus=2, object_store_memory=256 * 2**20, include_dashboard=False,
             log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


def uint8_images(n, shape=(8, 8), seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


ROOT = Path(__file__).resolve().parents[1]

# Params small enough for a whole pipeline run in about a minute on 2 cores.
TINY = {
    "render": {"num_images": 200},
    "train_refiner": {"channels": 8, "num_blocks": 2, "disc_layers": [[8, 1], [8, 1]], "batch_size": 32,
                      "pretrain_refiner_steps": 100, "pretrain_disc_steps": 5, "lr": 0.003, "steps": 10,
                      "semantic_steps": 60,
                      "history_size": 64, "log_every": 5},
    "refine": {"batch_size": 64},
    "train_estimator": {"steps": 80, "eval_every": 40, "batch_size": 64, "num_seeds": 2, "self_training_rounds": 1},
    # the gate of tasks without classes: 200 images and 2 seeds measure label keeping to a few
    # points only, a looser gate lets a tiny run promote a champion (the gate: test_stages)
    "evaluate": {"label_kept_min": 0.8},
}


def sh(*args, cwd, env, check=True, timeout=600):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result.stdout + result.stderr


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
    return env


@pytest.fixture(scope="session")
def dvc_project(tmp_path_factory):
    """A fresh git + DVC repo holding the project's tracked files and tiny params, reproduced
    once per session: (repo, env, the repro's output, its datasets' digests right after it;
    later tests may run experiments in it)."""
    from refiner import dataset
    repo = tmp_path_factory.mktemp("project")
    env = make_project(repo, TINY)
    first = sh("dvc", "repro", cwd=repo, env=env)
    digests = {name: dataset.open_dataset(repo / "data" / name).digest
               for name in ("synthetic", "real/unlabeled", "real/test", "refined")}
    return repo, env, first, digests


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


CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
BUCKET = "simrefinery"


@pytest.fixture
def s3_server():
    """A real S3 API on 127.0.0.1 (no mock of boto or pyarrow): (endpoint URL, a client)."""
    import boto3
    from moto.server import ThreadedMotoServer
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"))  # moto keeps state per process
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                          region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    yield endpoint, client
    server.stop()





@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """This process (and the Ray tasks it starts) pointed at the local S3 server, as a user's
    AWS environment variables would point it at theirs; yields the boto client."""
    endpoint, client = s3_server
    for name, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(name, value)
    yield client
