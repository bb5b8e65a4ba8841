"""End to end: the real `dvc repro` with tiny params in a temporary copy of the repo."""

import json
import re
import sqlite3
import sys
import urllib.request

import numpy as np
import pytest
import yaml

from refiner import dataset
from tests.conftest import mlflow_server, sh

DEFAULT_LAMBDA = yaml.safe_load(open("params.yaml"))["train_refiner"]["lambda"]  # TINY keeps the default
STAGES = ["render", "ingest", "train_refiner", "refine", "train_estimator@synthetic", "train_estimator@refined",
          "evaluate"]

def lineage(repo, env, target: str) -> str:
    return sh(sys.executable, "-m", "refiner.lineage", target, cwd=repo, env=env)


def stages_run(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


@pytest.fixture(scope="module")
def project(dvc_project):
    repo, env, first, _ = dvc_project
    return repo, env, first


@pytest.fixture(scope="module")
def first_refined(project):
    """The refined dataset of the first repro, before any experiment changes it."""
    repo, env, _ = project
    return dataset.open_dataset(repo / "data/refined").digest, lineage(repo, env, "data/refined")


@pytest.mark.slow
def test_repro_runs_every_stage_and_writes_outputs(project):
    repo, _, first = project
    assert stages_run(first) == STAGES
    synthetic = dataset.validate(repo / "data/synthetic")
    refined = dataset.validate(repo / "data/refined")
    assert synthetic.num_rows == refined.num_rows == 200
    assert list(refined.load()["id"]) == list(synthetic.load()["id"])
    assert refined.manifest["upstream"]["synthetic"] == synthetic.digest
    assert synthetic.manifest["image_encoding"] == refined.manifest["image_encoding"] == "raw"  # params.yaml's
    assert dataset.open_dataset(repo / "data/real/unlabeled").label_columns == []
    report = json.loads((repo / "metrics/eval.json").read_text())
    for name in ("synthetic", "refined", "oracle"):
        per_class = report[name]["per_class_accuracy"]
        assert set(per_class) == {str(d) for d in range(10)}
        assert report[name]["accuracy"] == pytest.approx(np.mean(report[name]["accuracy_per_seed"]))
        assert len(report[name]["accuracy_per_seed"]) == 2
    assert report["metric"] == "accuracy"
    assert report["end_to_end_gain"] == pytest.approx(report["refined"]["accuracy"] - report["synthetic"]["accuracy"])
    # 200 rendered digits are far from real ones: a real-vs-fake classifier tells them apart
    assert set(report["realism"]) == {"synthetic", "refined"} and report["realism"]["synthetic"] > 0.65
    assert set(report["class_realism"]) == {"synthetic", "refined"}  # the label-free rule for digits
    assert report["oracle"]["accuracy"] > 0.5  # real labels, even 80 tiny steps: a working recipe
    assert report["oracle"]["accuracy"] > report["synthetic"]["accuracy"]
    # the refiner alone: the estimators before self-training, kept beside the end-to-end ones
    assert sorted(p.name for p in (repo / "models/estimator-refined").glob("*.pt")) == [
        "model-seed0.pt", "model-seed1.pt", "plain-seed0.pt", "plain-seed1.pt"]
    gain = report["refinery_gain"]
    assert gain["gain"] == pytest.approx(np.mean(gain["gain_per_seed"])) and len(gain["gain_per_seed"]) == 2
    assert gain["gain"] == pytest.approx(gain["refined"] - gain["synthetic"])
    # a model that is not ours, on the Parquet datasets: the same SVC trained here scores the same
    from sklearn.svm import SVC
    train, test = dataset.open_dataset(repo / "data/refined").load(), dataset.open_dataset(repo / "data/real/test").load()
    svc = SVC(kernel="rbf").fit(train["image"].reshape(len(train["image"]), -1), train["label"])
    assert report["baseline"]["model"] == "SVC"
    assert report["baseline"]["refined"] == pytest.approx(svc.score(test["image"].reshape(len(test["image"]), -1),
                                                                    test["label"]))
    assert "refinery gain" in (repo / "metrics/eval.md").read_text()
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
def test_stage_runs_are_children_of_one_pipeline_run(project):
    repo, _, _ = project
    with sqlite3.connect(repo / "mlflow.db") as db:
        tags = db.execute("select r.name, t.key, t.value from runs r join tags t on r.run_uuid = t.run_uuid").fetchall()
        params = db.execute("select key, value from params").fetchall()
        sources = [row[0] for row in db.execute("select dataset_source from datasets").fetchall()]
    by_run = {}
    for name, key, value in tags:
        by_run.setdefault(name, {})[key] = value
    parents = {by_run[stage]["mlflow.parentRunId"] for stage in STAGES}
    assert len(parents) == 1
    pipelines = [name for name, t in by_run.items() if t.get("simrefinery.role") == "pipeline"]
    assert len(pipelines) == 1
    for stage in STAGES:
        assert by_run[stage]["dvc.stage"] == stage and len(by_run[stage]["simrefinery.params_hash"]) == 16
    # no absolute paths of the machine in run metadata: dataset sources are repo-relative
    assert not [text for text in json.dumps([tags, params, sources]).split('"') if str(repo) in text]


@pytest.mark.slow
def test_lineage_of_refined_dataset_reaches_models_data_params_and_commit(project, first_refined):
    repo, env, _ = project
    _, tree = first_refined
    commit = sh("git", "rev-parse", "HEAD", cwd=repo, env=env).strip()
    for expected in ("run refine", "model refiner", "simrefinery-refiner v1", "run train_refiner", f"lambda={DEFAULT_LAMBDA}",
                     "dataset synthetic", "dataset real-unlabeled", "run render", "num_images=200", "run ingest",
                     f"commit {commit[:10]}"):
        assert expected in tree, f"{expected!r} missing from:\n{tree}"
    champion = lineage(repo, env, "models:/simrefinery-estimator@champion")
    assert "simrefinery-estimator v" in champion and "@champion" in champion
    assert "run train_estimator@refined" in champion
    assert "run refine" in champion  # down through the refined data to the refiner


@pytest.mark.slow
def test_mlflow_server_rest_shows_refine_inputs_and_champion_alias(project):
    repo, env, _ = project
    with mlflow_server(repo, env, "--backend-store-uri", f"sqlite:///{repo / 'mlflow.db'}") as base:
        def call(path, body=None):
            request = urllib.request.Request(f"{base}/api/2.0/mlflow/{path}", method="POST" if body else "GET",
                                             data=json.dumps(body).encode() if body else None,
                                             headers={"Content-Type": "application/json"})
            return json.load(urllib.request.urlopen(request, timeout=10))

        experiment = call("experiments/get-by-name?experiment_name=simrefinery")["experiment"]
        found = call("runs/search", {"experiment_ids": [experiment["experiment_id"]],
                                     "filter": "tags.`simrefinery.stage` = 'refine'"})["runs"]
        run_id = found[0]["info"]["run_id"]
        inputs = call(f"runs/get?run_id={run_id}")["run"]["inputs"]  # search results omit model inputs
        assert "synthetic" in [i["dataset"]["name"] for i in inputs["dataset_inputs"]]
        refiner = json.loads((repo / "models/refiner.mlflow.json").read_text())
        assert refiner["model_id"] in [m["model_id"] for m in inputs.get("model_inputs", [])]
        version = call("registered-models/alias?name=simrefinery-estimator&alias=champion")["model_version"]
        assert version["name"] == "simrefinery-estimator" and "champion" in version["aliases"]


@pytest.mark.slow
def test_second_repro_does_nothing(project):
    repo, env, _ = project
    assert stages_run(sh("dvc", "repro", cwd=repo, env=env)) == []
    assert "up to date" in sh("dvc", "status", cwd=repo, env=env)


@pytest.mark.slow
def test_a_sweep_profile_is_a_dvc_experiment_that_reruns_only_dependent_stages(project, first_refined):
    """`experiments.sweep` runs a profile as `dvc exp run -S ...`: only the stages downstream
    of the changed param rerun, params.yaml is restored, and the new lambda is a new branch
    of the lineage, not an overwrite."""
    repo, env, _ = project
    params_before = (repo / "params.yaml").read_text()
    before = dataset.open_dataset(repo / "data/synthetic").digest
    output = sh(sys.executable, "-m", "experiments.sweep", "--cached", "--profiles", "lambda-2", cwd=repo, env=env)
    assert stages_run(output) == ["train_refiner", "refine", "train_estimator@refined", "evaluate"]
    assert dataset.open_dataset(repo / "data/synthetic").digest == before
    assert (repo / "params.yaml").read_text() == params_before
    import torch
    checkpoint = torch.load(repo / "models/refiner/refiner.pt", weights_only=True)  # what the experiment ran with
    assert checkpoint["config"]["lambda"] == 2.0 and checkpoint["config"]["semantic_weight"] == 0.0
    [row] = json.loads((repo / "experiments/results/sweep.json").read_text())
    eval_report = json.loads((repo / "metrics/eval.json").read_text())  # the experiment's own evaluation
    assert row["profile"] == "lambda-2" and row["refined"]["accuracy"] == eval_report["refined"]["accuracy"]
    assert row["refinery_gain"] == eval_report["refinery_gain"] and row["cached"]
    assert row["refiner_train_seconds"] > 0  # read back from the experiment's MLflow run
    assert "| lambda-2" in (repo / "experiments/results/sweep.md").read_text()
    assert "lambda-2-" in sh("dvc", "exp", "list", cwd=repo, env=env)
    assert "refined" in sh("dvc", "metrics", "show", "--json", cwd=repo, env=env)
    assert "losses.csv" in sh("dvc", "plots", "show", "--json", cwd=repo, env=env)
    old_digest, _ = first_refined
    new_tree, old_tree = lineage(repo, env, "data/refined"), lineage(repo, env, old_digest)
    assert "lambda=2.0" in new_tree and "simrefinery-refiner v2" in new_tree
    assert f"lambda={DEFAULT_LAMBDA}" in old_tree and "simrefinery-refiner v1" in old_tree
    assert "lambda=2.0" not in old_tree
