"""End to end: the real `dvc repro` with tiny params in a temporary copy of the repo."""

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from refiner import dataset

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["render", "ingest", "train_refiner", "refine", "train_task@synthetic", "train_task@refined", "evaluate"]

TINY = {
    "render": {"num_images": 200},
    "train_refiner": {"channels": 8, "num_blocks": 2, "disc_layers": [[8, 1], [8, 1]], "batch_size": 32,
                      "pretrain_refiner_steps": 5, "pretrain_disc_steps": 5, "steps": 10, "history_size": 64,
                      "log_every": 5},
    "refine": {"batch_size": 64, "rows_per_file": 80},
    "train_task": {"steps": 60, "eval_every": 30, "batch_size": 32, "num_seeds": 2},
}


def sh(*args, cwd, env, check=True):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result.stdout + result.stderr


def stages_run(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A fresh git + DVC repo holding the project's tracked files and tiny params."""
    repo = tmp_path_factory.mktemp("project")
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file() and not name.startswith(("metrics/", "plots/", "dvc.lock")):
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for section, values in TINY.items():
        params[section].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "RAY_AUTH_MODE": "disabled"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("RAY_ADDRESS", None)
    sh("git", "init", "-q", cwd=repo, env=env)
    sh("git", "config", "user.email", "ci@example.com", cwd=repo, env=env)
    sh("git", "config", "user.name", "ci", cwd=repo, env=env)
    sh("git", "add", "-A", cwd=repo, env=env)
    sh("git", "commit", "-qm", "tiny", cwd=repo, env=env)
    first = sh("dvc", "repro", cwd=repo, env=env)
    return repo, env, first


@pytest.mark.slow
def test_repro_runs_every_stage_and_writes_outputs(project):
    repo, _, first = project
    assert stages_run(first) == STAGES
    synthetic = dataset.validate(repo / "data/synthetic")
    refined = dataset.validate(repo / "data/refined")
    assert synthetic.num_rows == refined.num_rows == 200
    assert list(refined.load()["id"]) == list(synthetic.load()["id"])
    assert refined.manifest["upstream"]["synthetic"] == synthetic.digest
    assert dataset.open_dataset(repo / "data/real/unlabeled").label_columns == []
    report = json.loads((repo / "metrics/eval.json").read_text())
    for name in ("synthetic", "refined", "oracle"):
        assert 0.0 <= report[name]["accuracy"] <= 1.0
        assert set(report[name]["per_class_accuracy"]) == {str(d) for d in range(10)}
        assert len(report[name]["accuracy_per_seed"]) == 2
    assert report["oracle"]["accuracy"] > 0.5  # real labels, even 60 tiny steps: a working recipe
    for png in ("refiner/samples.png", "evaluate/confusion-refined.png", "render/synthetic.png"):
        assert (repo / "plots" / png).stat().st_size > 1000
    assert "| refined |" in (repo / "metrics/eval.md").read_text()


@pytest.mark.slow
def test_every_stage_logged_an_mlflow_run_with_dataset_digests(project):
    repo, _, _ = project
    with sqlite3.connect(repo / "mlflow.db") as db:
        runs = dict(db.execute("select name, run_uuid from runs where status = 'FINISHED'").fetchall())
        assert set(STAGES) <= set(runs)
        inputs = db.execute(
            "select d.name, d.digest from inputs i join datasets d on i.source_id = d.dataset_uuid "
            "where i.destination_id = ?", (runs["refine"],)).fetchall()
        tags = dict(db.execute("select key, value from tags where run_uuid = ?", (runs["refine"],)).fetchall())
    synthetic_digest = dataset.open_dataset(repo / "data/synthetic").digest
    assert ("synthetic", synthetic_digest[:36]) in inputs
    assert tags["simrefinery.output.refined"] == dataset.open_dataset(repo / "data/refined").digest
    assert len(tags["git.commit"]) == 40
    artifacts = repo / "mlartifacts"
    assert any(artifacts.rglob("samples.png")) and any(artifacts.rglob("confusion-refined.png"))


@pytest.mark.slow
def test_second_repro_does_nothing(project):
    repo, env, _ = project
    assert stages_run(sh("dvc", "repro", cwd=repo, env=env)) == []
    assert "up to date" in sh("dvc", "status", cwd=repo, env=env)


@pytest.mark.slow
def test_exp_run_with_changed_lambda_reruns_only_dependent_stages(project):
    repo, env, _ = project
    before = dataset.open_dataset(repo / "data/synthetic").digest
    output = sh("dvc", "exp", "run", "-S", "train_refiner.lambda=0.5", cwd=repo, env=env)
    assert stages_run(output) == ["train_refiner", "refine", "train_task@refined", "evaluate"]
    assert dataset.open_dataset(repo / "data/synthetic").digest == before
    metrics = sh("dvc", "metrics", "show", "--json", cwd=repo, env=env)
    assert "refined" in metrics and "accuracy" in metrics
    plots = sh("dvc", "plots", "show", "--json", cwd=repo, env=env)
    assert "losses.csv" in plots
