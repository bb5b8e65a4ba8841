"""A real two-node Ray cluster on this machine (`ray start --head`, `ray start --address`),
each node advertising one GPU it does not have. The README's `ray job submit` command runs
the refine stage there, from a real local S3 server into it: its actors take the GPU branch,
one per GPU, on both nodes, say they run it on CPU, and the dataset equals the local run's,
digest for digest."""

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from refiner import data
from refiner.simgan.refine_job import refine_pixels
from refiner.simgan.trainer import load_refiner
from tests.helpers import BUCKET, CREDENTIALS, free_port, sh

RAY = str(Path(sys.executable).parent / "ray")
# the README's job: the stage, with the paths it is given (and the default's two actors, not the tiny params' one)
REFINE = "python -m stages.refine --refiner models/refiner --set refine.num_actors=2"


def start_node(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    """A node in its own process group (`--block` keeps `ray start` in the foreground), so
    the test stops exactly its processes: `ray stop` would stop every Ray on the machine.
    Its dashboard agent on a free port: every Ray's default is 52365, and a node whose agent
    cannot have it takes no job (with the tests' local Ray holding it, `ray job submit` said
    "No available agent to submit job" for 160 s)."""
    return subprocess.Popen([RAY, "start", *args, "--num-cpus", "2", "--num-gpus", "1", "--block",
                             "--dashboard-agent-listen-port", str(free_port()), "--disable-usage-stats"],
                            env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)


def submit(dashboard: int, *args: str, cwd, env) -> str:
    """`ray job submit` as the README runs it; a cluster whose job agent is not up yet says so
    and is asked again (Ray's own advice: "please try again later")."""
    for attempt in range(10):
        result = subprocess.run(["ray", "job", "submit", "--address", f"http://127.0.0.1:{dashboard}", *args],
                                cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
        if result.returncode == 0 or "No available agent to submit job" not in result.stderr or attempt == 9:
            break
        time.sleep(5)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def wait_for(condition, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(1)


def stop(node: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
        try:
            os.killpg(node.pid, sig)
            node.wait(wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def two_node_cluster(dvc_project, tmp_path_factory):
    """(a copy of the tiny reproduced project, its environment, the GCS and dashboard ports)."""
    tmp_path = tmp_path_factory.mktemp("cluster")
    repo = tmp_path / "project"
    shutil.copytree(dvc_project[0], repo, symlinks=True)
    env = dvc_project[1]
    env = {**env, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    gcs, dashboard = free_port(), free_port()
    # its own temp dir (short: Ray's socket paths must fit 107 characters), so the cluster
    # leaves no /tmp/ray/ray_current_cluster for a later ray.init() to join
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    head = start_node(["--head", "--port", str(gcs), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
                       "--include-dashboard", "true", "--temp-dir", temp_dir], env, tmp_path / "head.log")
    nodes = [head]
    try:
        def gpus() -> str:
            return subprocess.run([RAY, "status", "--address", f"127.0.0.1:{gcs}"], env=env, capture_output=True,
                                  text=True).stdout
        wait_for(lambda: "1.0 GPU" in gpus(), "the head node")
        nodes.append(start_node(["--address", f"127.0.0.1:{gcs}"], env, tmp_path / "worker.log"))
        wait_for(lambda: "2.0 GPU" in gpus(), "the second node")
        wait_for(lambda: subprocess.run([RAY, "job", "list", "--address", f"http://127.0.0.1:{dashboard}"], env=env,
                                        capture_output=True).returncode == 0, "the job server", timeout=180)
        yield repo, env, gcs, dashboard
    finally:
        for node in reversed(nodes):
            stop(node)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_bf16_channels_last_branch_stays_within_a_few_levels_of_fp32(dvc_project):
    """The GPU branch's numerics, run on CPU: bf16 autocast and a channels-last input."""
    repo = dvc_project[0]
    model = load_refiner(repo / "models/refiner/refiner.pt")
    images = data.open_dataset(repo / "data/synthetic").load()["image"][:64]
    fp32 = refine_pixels(model, images)
    model = model.to(memory_format=torch.channels_last)
    branch = refine_pixels(model, images, precision="bf16", channels_last=True)
    assert 0 < np.abs(branch - fp32).max() <= 3 / 255


@pytest.mark.slow
def test_readme_job_submit_refines_from_s3_into_s3_on_two_nodes_through_the_gpu_branch(dvc_project, two_node_cluster,
                                                                                         s3_env):
    """The README's `ray job submit`, the stage's source and output at s3:// prefixes and the S3
    settings in the job's runtime environment: its actors take the GPU branch, one per node,
    and the workers of both nodes read the parts from the bucket (the project holds no
    synthetic dataset any more); the dataset equals the local run's, digest for digest. (The
    shared-filesystem form of the job differs only in its paths, which a local refine reads
    the same way.)"""
    repo, env, gcs, dashboard = two_node_cluster
    local_digest = dvc_project[3]["refined"]
    for file in sorted((repo / "data/synthetic").iterdir()):
        s3_env.upload_file(str(file), BUCKET, f"synthetic/{file.name}")
    shutil.rmtree(repo / "data/synthetic")
    settings = {**CREDENTIALS, "AWS_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"]}
    out = submit(dashboard, "--runtime-env-json", json.dumps({"env_vars": settings}), "--",
                 "bash", "-c", f"cd {repo} && {REFINE} --source s3://{BUCKET}/synthetic --out s3://{BUCKET}/refined",
                 cwd=repo, env=env)
    assert "refine: the cluster has 2 GPUs: 2 actors, one GPU each" in out
    listing = sh("ray", "list", "actors", "--address", f"127.0.0.1:{gcs}", "--detail", "--limit", "1000",
                 "--format", "json", cwd=repo, env=env)
    actors = json.loads(listing[listing.index("["):])
    refiners = [a for a in actors if "RefinerPredictor" in a["class_name"]]
    assert len({a["node_id"] for a in refiners}) == 2  # one actor on each node
    assert all(a["required_resources"].get("GPU") == 1 for a in refiners)
    # each actor said it ran the GPU branch on CPU (Ray may print a line twice: count actors by pid)
    said = set(re.findall(r"pid=(\d+)\S* refine: this actor holds GPU \[0\] but the node has no CUDA device", out))
    assert len(said) == len(refiners), out[-3000:]
    refined = data.validate(f"s3://{BUCKET}/refined")
    assert refined.digest == local_digest  # the same bytes as the local run
    import mlflow  # the run records where it read its input (MLflow keeps one source per digest)
    tracking = mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    run = tracking.search_runs([tracking.get_experiment_by_name("simrefinery").experiment_id],
                               "tags.`simrefinery.stage` = 'refine'", order_by=["attributes.start_time DESC"])[0]
    inputs = {i.dataset.name: {t.key: t.value for t in i.tags} for i in run.inputs.dataset_inputs}
    assert inputs["synthetic"]["simrefinery.location"] == f"s3://{BUCKET}/synthetic"
    assert inputs["synthetic"]["simrefinery.digest"] == refined.manifest["upstream"]["synthetic"]
