"""Fixtures; what tests share besides them is in tests/helpers.py."""

import os
import tempfile

# One thread per process, here and in every stage, flow and job the tests start (they inherit
# the environment): make test runs two workers on two cores, and OpenMP threads that outnumber
# the cores spin instead of sleeping (measured: twice the CPU time for the same suite)
for _threads in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_threads, "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
# Prefect: a throwaway home, no analytics (else a 'database is locked' traceback), slow CI
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="prefect-home-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")

import urllib.request  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from tests.helpers import BUCKET, CREDENTIALS, free_port  # noqa: E402
from tests.worlds import WORLDS, reproduced  # noqa: E402

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


@pytest.fixture(scope="session")
def worlds(tmp_path_factory, request):
    """``worlds(name)``: the world's tiny project, reproduced by the real `dvc repro` once per
    session however many tests ask (``tests/worlds.py``)."""
    cache = {}

    def project(name: str):
        if name not in cache:
            ray = None if WORLDS[name].starts_ray else request.getfixturevalue("local_ray")
            cache[name] = reproduced(name, tmp_path_factory.mktemp(f"project-{name}"), ray)
        return cache[name]
    return project


@pytest.fixture(scope="session")
def dvc_project(worlds):
    """The digits project: (repo, env, the repro's output, its datasets' digests right after
    it; later tests may run experiments in it)."""
    project = worlds("digits")
    return project.repo, project.env, project.output, project.digests


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


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items):
    """Under `pytest -n 2 --dist loadgroup` (make test), the tests that share a reproduced world
    run on one worker, so each world is reproduced once per run, not once per worker."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "dvc_project" in item.fixturenames or params.get("name") == "digits":
            item.add_marker(pytest.mark.xdist_group("digits"))
        elif "worlds" in item.fixturenames and "name" in params:
            item.add_marker(pytest.mark.xdist_group(params["name"]))
