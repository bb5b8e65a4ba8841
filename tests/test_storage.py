"""Object storage, on a real local S3 server (moto's server mode on 127.0.0.1): the dataset
contract at s3:// prefixes (the same digests as on disk, manifest last, an interrupted write
resumed); the project's datasets and models push to an S3 remote and a fresh clone's `dvc
pull` restores them byte for byte; an MLflow server with `--artifacts-destination s3://...`
keeps the stages' artifacts in the bucket."""

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from refiner import data
from tests.helpers import BUCKET, CREDENTIALS, TINY, make_project, mlflow_server, sh, stage_command, uint8_images

LABELS = pa.schema([("label", pa.int64())])


def keys(client, prefix: str) -> list[str]:
    """The objects under ``prefix``, less the empty directory markers pyarrow leaves."""
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
                  if not o["Key"].endswith("/"))


def write_digits(path, n=25, seed=0, encoding="raw"):
    images = uint8_images(n, seed=seed)
    return data.write_dataset(path, np.array([f"id-{i:03d}" for i in range(n)], dtype=object), images,
                                 {"label": np.arange(n) % 10}, label_schema=LABELS, source="synthetic",
                                 producer="test", rows_per_file=10, image_encoding=encoding)


@pytest.mark.parametrize("encoding", ["raw", "png"])
def test_a_dataset_at_an_s3_prefix_has_the_digest_and_rows_of_the_same_dataset_on_disk(s3_env, tmp_path, encoding):
    uri = f"s3://{BUCKET}/datasets/synthetic"
    write_digits(uri, encoding=encoding)
    write_digits(tmp_path / "synthetic", encoding=encoding)
    remote, local = data.validate(uri), data.validate(tmp_path / "synthetic")
    assert remote.digest == local.digest and remote.files[0] == f"{uri}/part-00000.parquet"
    assert all(np.array_equal(a, b) for a, b in zip(remote.load().values(), local.load().values()))
    assert keys(s3_env, "datasets/") == [f"datasets/synthetic/{name}" for name in (
        ".huggingface.yaml", "_manifest.json", "part-00000.parquet", "part-00001.parquet", "part-00002.parquet")]  # no staging left


def test_an_interrupted_s3_write_leaves_the_old_dataset_and_resumes_its_finished_parts(s3_env, tmp_path):
    uri = f"s3://{BUCKET}/datasets/refined"
    old = write_digits(uri, n=35, seed=1)  # four parts
    images = uint8_images(25, seed=2)

    def table(part):
        rows = range(10 * part, min(10 * part + 10, 25))
        return data.make_table([f"r-{i}" for i in rows], images[list(rows)], {"label": np.array(rows) % 10},
                                  "refined", LABELS, "raw")
    with pytest.raises(RuntimeError, match="killed"):
        with data.open_writer(uri, label_schema=LABELS, producer="test", resume_key="job-1",
                                   image_encoding="raw", image_shape=[8, 8]) as writer:
            writer.write_part(0, table(0))
            raise RuntimeError("killed")  # an injected fault between parts
    assert data.open_dataset(uri).digest == data.manifest_digest(old)  # readers still see the old one
    assert "datasets/.refined.partial-job-1/part-00000.parquet" in keys(s3_env, "datasets/")
    with data.open_writer(uri, label_schema=LABELS, producer="test", resume_key="job-1",
                               image_encoding="raw", image_shape=[8, 8]) as writer:
        assert writer.has_part(0) and not writer.has_part(1)
        with pytest.raises(data.DatasetError, match="id is not unique"):
            writer.write_part(1, table(0))  # the kept part's ids are remembered
        for part in (1, 2):
            writer.write_part(part, table(part))
    resumed = data.validate(uri)
    with data.open_writer(tmp_path / "once", label_schema=LABELS, producer="test", image_encoding="raw",
                               image_shape=[8, 8]) as writer:
        for part in range(3):
            writer.write_part(part, table(part))
    assert resumed.digest == data.open_dataset(tmp_path / "once").digest
    assert keys(s3_env, "datasets/") == [f"datasets/refined/{name}" for name in (
        ".huggingface.yaml", "_manifest.json", "part-00000.parquet", "part-00001.parquet", "part-00002.parquet")]  # the old 4th is gone


def test_a_missing_or_tampered_s3_dataset_is_refused_naming_it(s3_env):
    uri = f"s3://{BUCKET}/datasets/synthetic"
    with pytest.raises(data.DatasetError, match=f"{uri}: no _manifest.json"):
        data.open_dataset(uri)
    write_digits(uri)
    s3_env.put_object(Bucket=BUCKET, Key="datasets/synthetic/part-00001.parquet", Body=b"not parquet")
    with pytest.raises(data.DatasetError, match=f"{uri}/part-00001.parquet: content does not match"):
        data.open_dataset(uri)


@pytest.mark.slow
def test_datasets_push_to_an_s3_remote_and_a_fresh_clone_pulls_them_back(dvc_project, s3_server, tmp_path):
    endpoint, client = s3_server
    project, env, _, digests = dvc_project
    repo, env = tmp_path / "project", {**env, **CREDENTIALS}
    shutil.copytree(project, repo, symlinks=True)
    digests = {name: data.validate(repo / "data" / name).digest for name in digests}  # as the copy holds them
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
        assert data.validate(clone / "data" / name).digest == digest, name
    assert (clone / "models/refiner/refiner.pt").read_bytes() == (repo / "models/refiner/refiner.pt").read_bytes()
    # DVC sees the clone exactly as the project it came from (which earlier tests may have left
    # with changed params: the session's project is shared)
    assert sh("dvc", "status", cwd=clone, env=env) == sh("dvc", "status", cwd=repo, env=env)


@pytest.mark.slow
def test_an_mlflow_server_with_s3_artifacts_keeps_the_stages_artifacts_in_the_bucket(s3_server, tmp_path):
    """The README's server recipe, as written: the stage logs through the server, whose
    artifact store is the bucket; the artifact comes back through the server byte for byte."""
    endpoint, client = s3_server
    env = {**make_project(tmp_path / "project", TINY), **CREDENTIALS, "MLFLOW_S3_ENDPOINT_URL": endpoint}
    with mlflow_server(tmp_path, env, "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                       "--artifacts-destination", f"s3://{BUCKET}/mlflow") as uri:
        client_env = {k: v for k, v in env.items() if not k.startswith(("AWS_", "MLFLOW_S3"))}  # the server holds them
        sh(*stage_command("render", tmp_path / "project"), cwd=tmp_path / "project",
           env={**client_env, "MLFLOW_TRACKING_URI": uri})
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
