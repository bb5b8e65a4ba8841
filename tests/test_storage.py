"""Object storage: the project's datasets and models push to an S3 remote served by a real
local S3 server (moto's server mode on 127.0.0.1), and a fresh clone's `dvc pull` restores
them byte for byte."""

import shutil
import socket

import pytest

from refiner import dataset
from tests.conftest import sh

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
