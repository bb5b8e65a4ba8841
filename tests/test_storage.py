"""Object storage, on a real local S3 server (moto's server mode on 127.0.0.1): the project's
datasets and models push to an S3 remote and a fresh clone's `dvc pull` restores them byte
for byte; an MLflow server with `--artifacts-destination s3://...` keeps the stages'
artifacts in the bucket."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from refiner import dataset
from tests.conftest import TINY, make_project, sh

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
BUCKET = "simrefinery"


@pytest.fixture
def s3_server():
    """A real S3 API on 127.0.0.1 (no mock of boto or pyarrow): (endpoint URL, a client)."""
    import boto3
    from moto.server import ThreadedMotoServer
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                          region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    yield endpoint, client
    server.stop()


@pytest.mark.slow
def test_datasets_push_to_an_s3_remote_and_a_fresh_clone_pulls_them_back(dvc_project, s3_server, tmp_path):
    endpoint, client = s3_server
    project, env, _, digests = dvc_project
    repo, env = tmp_path / "project", {**env, **CREDENTIALS}
    shutil.copytree(project, repo, symlinks=True)
    digests = {name: dataset.validate(repo / "data" / name).digest for name in digests}  # as the copy holds them
    sh("dvc", "remote", "add", "-d", "storage", f"s3://{BUCKET}/dvc", cwd=repo, env=env)
    sh("dvc", "remote", "modify", "storage", "endpointurl", endpoint, cwd=repo, env=env)
    sh("git", "add", "-A", cwd=repo, env=env)
    sh("git", "commit", "-qm", "pipeline outputs and an S3 remote", cwd=repo, env=env)
    sh("dvc", "push", cwd=repo, env=env)
    stored = client.list_objects_v2(Bucket=BUCKET, Prefix="dvc/")
    assert stored["KeyCount"] > 10  # the datasets' files and the models are in the bucket

    clone = tmp_path / "clone"
    sh("git", "clone", "-q", str(repo), str(clone), cwd=tmp_path, env=env)
    assert not (clone / "data").exists() and not (clone / ".dvc/cache").exists()
    sh("dvc", "pull", cwd=clone, env=env)
    for name, digest in digests.items():
        assert dataset.validate(clone / "data" / name).digest == digest, name
    assert (clone / "models/refiner/refiner.pt").read_bytes() == (repo / "models/refiner/refiner.pt").read_bytes()
    # DVC sees the clone exactly as the project it came from (which earlier tests may have left
    # with changed params: the session's project is shared)
    assert sh("dvc", "status", cwd=clone, env=env) == sh("dvc", "status", cwd=repo, env=env)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_an_mlflow_server_with_s3_artifacts_keeps_the_stages_artifacts_in_the_bucket(s3_server, tmp_path):
    """The README's server recipe, as written: the stage logs through the server, whose
    artifact store is the bucket; the artifact comes back through the server byte for byte."""
    endpoint, client = s3_server
    env = {**make_project(tmp_path / "project", TINY), **CREDENTIALS, "MLFLOW_S3_ENDPOINT_URL": endpoint}
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
                               f"sqlite:///{tmp_path / 'server.db'}", "--artifacts-destination",
                               f"s3://{BUCKET}/mlflow", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2)
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "mlflow server did not start"
                time.sleep(1)
        client_env = {k: v for k, v in env.items() if not k.startswith(("AWS_", "MLFLOW_S3"))}  # the server holds them
        sh(sys.executable, "-m", "stages.render", cwd=tmp_path / "project", env={**client_env, "MLFLOW_TRACKING_URI": uri})
        keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="mlflow/").get("Contents", [])]
        assert any(key.endswith("/synthetic.png") for key in keys), keys
        import mlflow
        tracking = mlflow.MlflowClient(uri)  # not the process's tracking URI: other tests use theirs
        experiment = tracking.get_experiment_by_name("simrefinery").experiment_id
        run = tracking.search_runs([experiment], "tags.`simrefinery.stage` = 'render'")[0]
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied: clients need no S3 credentials
        fetched = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="synthetic.png",
                                                      dst_path=str(tmp_path / "fetched"), tracking_uri=uri)
        assert Path(fetched).read_bytes() == (tmp_path / "project/plots/render/synthetic.png").read_bytes()
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
