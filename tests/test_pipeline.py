"""End to end: the real `dvc repro` with tiny params in a temporary copy of the repo, one
project per world (tests/worlds.py), reproduced once per session."""

import json
import os
import re
import sqlite3
import sys
import urllib.request

import numpy as np
import pytest
import yaml

from refiner import data
from refiner.evaluation.report import Report, headline
from refiner.params import load_params
from tests.helpers import ROOT, joining, sh
from tests.worlds import WORLDS

DEFAULT_LAMBDA = yaml.safe_load(open(ROOT / "params.yaml"))["train_refiner"]["lambda"]  # TINY keeps the default
STAGES = ["render", "ingest", "train_refiner", "refine", "train_estimator@synthetic", "train_estimator@refined",
          "evaluate"]


def lineage(repo, env, target: str) -> str:
    return sh(sys.executable, "-m", "refiner.cli", "lineage", target, cwd=repo, env=env)


def stages_run(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


def report_of(repo) -> Report:
    return Report.model_validate_json((repo / "metrics/eval.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("name", WORLDS)
def test_a_world_runs_through_dvc_repro_keeping_every_label(worlds, name):
    """Every stage runs; the refined dataset holds the synthetic rows' ids and labels, row by
    row, with new pixels; the pool has no label column; the report is the head's."""
    project, world = worlds(name), WORLDS[name]
    repo = project.repo
    assert stages_run(project.output) == STAGES
    synthetic, refined = data.validate(repo / "data/synthetic"), data.validate(repo / "data/refined")
    assert synthetic.manifest["image_shape"] == refined.manifest["image_shape"] == world.image_shape
    assert synthetic.manifest["image_encoding"] == refined.manifest["image_encoding"] == yaml.safe_load(
        (repo / "params.yaml").read_text())["image_encoding"]
    assert refined.manifest["upstream"]["synthetic"] == synthetic.digest
    assert refined.label_columns == synthetic.label_columns and synthetic.label_columns
    before, after = synthetic.load(), refined.load()
    for column in ["id", *synthetic.label_columns]:
        same = [m["bytes"] for m in before[column]] == [m["bytes"] for m in after[column]] \
            if synthetic.manifest["schema"][column].startswith("struct") else np.array_equal(before[column], after[column])
        assert same, column
    assert np.abs(before["image"] - after["image"]).mean() > 0.001  # it refined the pixels
    assert data.open_dataset(repo / "data/real/unlabeled").label_columns == []
    report = report_of(repo)
    assert report.metric == world.metric
    for trained_on in ("synthetic", "refined"):
        score = report.results[trained_on]
        assert len(score.per_seed) == world.num_seeds and score.mean == pytest.approx(np.mean(score.per_seed))
    gain = report.refinery_gain
    sign = 1 if report.higher_is_better else -1
    assert gain.gain == pytest.approx(sign * (gain.refined - gain.synthetic))
    assert report.end_to_end_gain.gain == pytest.approx(sign * (report.results["refined"].mean
                                                                - report.results["synthetic"].mean))
    assert "| **refinery gain**" in (repo / "metrics/eval.md").read_text()
    assert (repo / "plots/refiner/samples.png").stat().st_size > 1000
    assert (repo / "plots/evaluate" / world.plot).stat().st_size > 1000


@pytest.mark.slow
def test_digits_report_the_oracle_per_class_accuracy_and_a_baseline_that_is_not_ours(dvc_project):
    repo = dvc_project[0]
    report = report_of(repo)
    for name in ("synthetic", "refined", "oracle"):
        assert set(report.results[name].per_class) == {str(d) for d in range(10)}
    # 200 rendered digits are far from real ones: a real-vs-fake classifier tells them apart
    assert report.realism.synthetic > 0.65
    assert report.class_realism is not None and report.selection_rule == "class_realism"  # the rule for classes
    assert report.results["oracle"].mean > 0.5  # real labels, even 80 tiny steps: a working recipe
    assert report.results["oracle"].mean > report.results["synthetic"].mean
    # the refiner alone: the estimators before adaptation, kept beside the end-to-end ones
    models = repo / "models/estimator-refined"
    assert sorted(p.name for p in models.glob("*.pt")) == [
        "model-seed0.pt", "model-seed1.pt", "plain-seed0.pt", "plain-seed1.pt"]
    assert data.file_sha256(models / "model-seed0.pt") != data.file_sha256(models / "plain-seed0.pt")
    # the levers, paired by seed: (adapted - plain on refined) - (the same on synthetic) = end to end - refinery
    adapted = report.adaptation_gain
    assert report.adaptation == load_params(repo / "params.yaml").train_estimator.adaptation != "none"
    for seed in range(2):
        assert adapted["refined"].gain_per_seed[seed] - adapted["synthetic"].gain_per_seed[seed] == pytest.approx(
            report.end_to_end_gain.gain_per_seed[seed] - report.refinery_gain.gain_per_seed[seed])
    # a model that is not ours, on the Parquet datasets: the same SVC trained here scores the same
    from sklearn.svm import SVC
    train, test = data.open_dataset(repo / "data/refined").load(), data.open_dataset(repo / "data/real/test").load()
    svc = SVC(kernel="rbf").fit(train["image"].reshape(len(train["image"]), -1), train["label"])
    assert report.baseline.model == "SVC"
    assert report.baseline.refined == pytest.approx(svc.score(test["image"].reshape(len(test["image"]), -1),
                                                              test["label"]))
    assert (repo / "plots/render/synthetic.png").stat().st_size > 1000


@pytest.mark.slow
@pytest.mark.xdist_group("gaze")
def test_gaze_estimators_beat_straight_ahead_and_its_rule_is_reverse_validation(worlds):
    from refiner.tasks.gaze.angles import angular_error_deg
    repo = worlds("gaze").repo
    test = data.open_dataset(repo / "data/real/test").load()
    report = report_of(repo)
    # a model that always answers "straight ahead" is the bar every trained estimator must clear
    truth = np.stack([test["gaze_pitch"], test["gaze_yaw"]], axis=1)
    straight_ahead = angular_error_deg(np.zeros_like(truth), truth).mean()
    assert "oracle" not in report.results
    for name in ("synthetic", "refined"):
        assert max(report.results[name].per_seed) < straight_ahead, (name, straight_ahead)
    assert data.open_dataset(repo / "data/refined").manifest["schema"]["gaze_pitch"] == "float"  # float32
    assert report.realism.synthetic > 0.7  # rendered vs camera-profile eyes: told apart
    assert report.class_realism is None and report.selection_rule == "reverse_validation"  # gaze has no classes
    assert report.selection_score is None or report.selection_score <= 0  # minus the seeds' disagreement
    assert "angular error" in (repo / "metrics/eval.md").read_text()
    # no classes: the mean teacher learnt the teacher's outputs on the pool, the plain model kept beside it
    models = repo / "models/estimator-refined"
    assert data.file_sha256(models / "model-seed0.pt") != data.file_sha256(models / "plain-seed0.pt")
    assert report.adaptation == "mean_teacher" and set(report.adaptation_gain) == {"synthetic", "refined"}


@pytest.mark.slow
@pytest.mark.xdist_group("toy")
def test_a_world_written_in_one_file_needs_one_params_section_and_nothing_else(worlds):
    repo, env = worlds("toy").repo, worlds("toy").env
    files = sh("git", "ls-files", cwd=repo, env=env).split()
    edited = [name for name in files if not (ROOT / name).is_file() or (ROOT / name).read_bytes() != (repo / name).read_bytes()]
    assert edited == ["params.yaml", "refiner/tasks/toy.py"]  # the whole edit: one file and one params section
    synthetic = data.validate(repo / "data/synthetic")
    assert synthetic.manifest["params"]["toy"] == {"size": 10, "camera_noise": 0.2}
    report = report_of(repo)
    assert set(report.results["oracle"].per_class) == {"0", "1"}
    assert report.results["oracle"].mean > 0.8  # left or right: easy with real labels


@pytest.mark.slow
@pytest.mark.xdist_group("images")
def test_your_own_folders_regress_keypoints_and_boxes_and_fall_back_to_label_free_figures(worlds):
    """The images world from `simrefinery init`; then without a labelled test set and without
    an estimator, the stages that change, run as dvc.yaml runs them (a whole `dvc repro` would
    redo everything: each dataset's manifest records the task's section)."""
    from tests.helpers import stage_command
    project = worlds("images")
    repo, env = project.repo, project.env
    assert "regresses ['keypoints', 'box']" in project.output
    assert data.open_dataset(repo / "data/synthetic").label_columns == ["shape", "keypoints", "box", "mask"]
    assert report_of(repo).baseline.model == "KernelRidge"
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["images"].update(test=None, test_labels=None, target=[])
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for stage in ("ingest", "train_estimator@refined", "evaluate"):
        sh(*stage_command(stage, repo), cwd=repo, env=env)
    table = (repo / "metrics/eval.md").read_text()
    assert table.startswith("no estimator fits the task's labels: label-free figures only")
    report = report_of(repo)
    assert report.metric is None and report.results == {} and report.label_kept is None
    assert 0.5 < report.diversity_ratio < 1.5 and 0.4 < report.realism.refined <= 1
    assert not (repo / "data/real/test/_manifest.json").exists()
    assert not list((repo / "models/estimator-refined").glob("*.pt"))


@pytest.fixture(scope="module")
def project(dvc_project):
    repo, env, first, _ = dvc_project
    return repo, env, first


@pytest.fixture(scope="module")
def first_refined(project):
    """The refined dataset of the first repro, before any experiment changes it."""
    repo, env, _ = project
    return data.open_dataset(repo / "data/refined").digest, lineage(repo, env, "data/refined")


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
    synthetic_digest = data.open_dataset(repo / "data/synthetic").digest
    assert ("synthetic", synthetic_digest[:36]) in inputs
    assert tags["simrefinery.output.refined"] == data.open_dataset(repo / "data/refined").digest
    recorded = report_of(repo).datasets  # the contract digests, where DVC users look too
    assert recorded["refined"] == tags["simrefinery.output.refined"] and recorded["synthetic"] == synthetic_digest
    assert len(tags["git.commit"]) == 40
    with sqlite3.connect(repo / "mlflow.db") as db:  # one name per figure: DVC's headline, the same in MLflow
        logged = dict(db.execute("select key, value from latest_metrics where run_uuid = ?", (runs["evaluate"],)))
    shown = json.loads((repo / "metrics/headline.json").read_text())
    assert {name: logged[name] for name in shown} == pytest.approx(shown, abs=1e-4)
    assert "end_to_end_synthetic" in logged and not {"synthetic_accuracy", "realism_refined"} & set(logged)
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
def test_the_registered_refiner_stands_alone_on_uint8_images(project, tmp_path):
    """`mlflow.pyfunc.load_model` and `mlflow models predict --env-manager local` take uint8
    images as the datasets hold them and give back the refine job's uint8 pixels."""
    import mlflow
    from refiner.simgan.refine_job import refine_pixels
    from refiner.simgan.trainer import load_refiner
    repo, env, _ = project
    record = json.loads((repo / "models/refiner.mlflow.json").read_text())
    pixels = data.to_uint8(data.open_dataset(repo / "data/synthetic").load()["image"][:4])
    expected = data.to_uint8(refine_pixels(load_refiner(repo / "models/refiner/refiner.pt"), pixels / 255))
    assert not np.array_equal(expected, pixels)  # the refiner changes them
    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    try:
        model = mlflow.pyfunc.load_model(record["model_uri"])
    finally:
        mlflow.set_tracking_uri(None)
    inputs = model.metadata.get_input_schema().inputs[0]
    assert str(inputs.type) == "uint8" and list(inputs.shape) == [-1, *pixels.shape[1:]]
    out = model.predict(pixels)
    assert out.dtype == np.uint8 and np.array_equal(out, expected)
    (tmp_path / "in.json").write_text(json.dumps({"inputs": pixels.tolist()}))
    sh(sys.executable, "-m", "mlflow", "models", "predict", "-m", record["model_uri"], "-i", str(tmp_path / "in.json"),
       "-t", "json", "-o", str(tmp_path / "out.json"), "--env-manager", "local", cwd=repo,
       env={**env, "MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}"})
    predicted = np.asarray(json.loads((tmp_path / "out.json").read_text())["predictions"])
    assert np.array_equal(predicted, expected)


@pytest.mark.slow
def test_second_repro_does_nothing(project):
    repo, env, _ = project
    assert stages_run(sh("dvc", "repro", cwd=repo, env=env)) == []
    assert "up to date" in sh("dvc", "status", cwd=repo, env=env)


@pytest.mark.slow
def test_the_front_door_runs_reports_validates_and_serves_the_ui(project, tmp_path):
    """`simrefinery run` is `dvc repro` plus the table (nothing reruns here), `report` prints
    metrics/eval.md, `validate` summarises a dataset and refuses a tampered one in one line,
    `ui` serves this project's store on 127.0.0.1 (the refine run's inputs, the champion)."""
    import shutil
    import subprocess
    import time
    from tests.helpers import free_port
    repo, env, _ = project
    cli = (sys.executable, "-m", "refiner.cli")
    out = sh(*cli, "run", cwd=repo, env=env)
    table = (repo / "metrics/eval.md").read_text()
    assert stages_run(out) == [] and out.endswith(table) and out.count(table) == 1
    assert sh(*cli, "report", cwd=repo, env=env) == table
    # --flow --set reaches the flow's own --set (run --set: test_dvc_exp_run_set_refuses_bad_params)
    refused = subprocess.run([*cli, "run", "--flow", "--set", "train_refiner.lamda=1"], cwd=repo, env=env,
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "train_refiner.lamda: Extra inputs are not permitted" in refused.stderr
    rows = data.open_dataset(repo / "data/refined").num_rows
    assert f"data/refined: valid, {rows} rows" in sh(*cli, "validate", "data/refined", cwd=repo, env=env)
    tampered = tmp_path / "refined"
    shutil.copytree(repo / "data/refined", tampered)
    part = sorted(tampered.glob("*.parquet"))[0]
    part.write_bytes(part.read_bytes()[:-10])
    refused = subprocess.run([*cli, "validate", str(tampered)], cwd=repo, env=env, capture_output=True, text=True)
    assert refused.returncode == 1 and refused.stderr.startswith(f"error: {tampered}") and "Traceback" not in refused.stderr
    port = free_port()
    server = subprocess.Popen([*cli, "ui", "--port", str(port)], cwd=repo, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "simrefinery ui did not answer"
                time.sleep(1)
        the_ui_shows_refine_inputs_and_champion_alias(f"http://127.0.0.1:{port}", repo)
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def the_ui_shows_refine_inputs_and_champion_alias(base: str, repo) -> None:
    """Through the MLflow server's REST API, as the UI reads it."""
    def call(path, body=None):
        request = urllib.request.Request(f"{base}/api/2.0/mlflow/{path}", method="POST" if body else "GET",
                                         data=json.dumps(body).encode() if body else None,
                                         headers={"Content-Type": "application/json"})
        return json.load(urllib.request.urlopen(request, timeout=10))

    experiment = call("experiments/get-by-name?experiment_name=simrefinery")["experiment"]
    assert {"key": "mlflow.experimentKind", "value": "custom_model_development"} in experiment["tags"]
    found = call("runs/search", {"experiment_ids": [experiment["experiment_id"]],
                                 "filter": "tags.`simrefinery.stage` = 'refine'"})["runs"]
    run = call(f"runs/get?run_id={found[0]['info']['run_id']}")["run"]
    inputs = run["inputs"]  # search results omit model inputs
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    rows = data.open_dataset(repo / "data/refined").num_rows
    assert metrics["rows"] == rows and metrics["images_per_s"] == pytest.approx(rows / metrics["seconds"], rel=0.01)
    assert "synthetic" in [i["dataset"]["name"] for i in inputs["dataset_inputs"]]
    refiner = json.loads((repo / "models/refiner.mlflow.json").read_text())
    assert refiner["model_id"] in [m["model_id"] for m in inputs.get("model_inputs", [])]
    version = call("registered-models/alias?name=simrefinery-estimator&alias=champion")["model_version"]
    assert version["name"] == "simrefinery-estimator" and "champion" in version["aliases"]


@pytest.mark.slow
def test_dvc_views_fit_120_columns_and_the_plots_page_needs_no_network(project, tmp_path):
    """`dvc metrics show` shows the headline alone; `dvc plots show` writes a page with vega
    inlined (no script from a CDN) and each plot once. (That the page draws its curves in a
    browser with no network: docs/plots/check-offline.py, with Chromium.)"""
    repo, env, _ = project
    shown = sh("dvc", "metrics", "show", cwd=repo, env={**env, "COLUMNS": "120"})
    assert "metrics/headline.json" in shown and "refinery_gain" not in shown
    assert max(map(len, shown.splitlines())) <= 120
    sh("dvc", "plots", "show", "-o", str(tmp_path / "plots"), cwd=repo, env=env)
    page = (tmp_path / "plots" / "index.html").read_text()
    assert "<script src=" not in page and "vegaEmbed(" in page and "vega-lite" in page
    assert page.count('id = "refiner_losses"') == 1 and page.count("refiner_samples.png") == 1
    assert page.count("plots_refiner_losses_csv") == 0  # drawn by the top-level plots only


# `simrefinery refine` with a slow writer (an injected fault), so a kill lands mid-job
SLOW_REFINE = """
import sys, time
from refiner import data
from refiner.cli import main
write_part = data.DatasetWriter.write_part
def slow_write_part(self, index, table):
    write_part(self, index, table)
    time.sleep(1.0)
data.DatasetWriter.write_part = slow_write_part
main(sys.argv[1:])
"""


@pytest.mark.slow
def test_simrefinery_refine_streams_a_folder_through_the_champion_refiner_and_resumes_after_a_kill(project, local_ray,
                                                                                                  tmp_path):
    """The front door: a folder of frames streamed in parts of 1024, `--refiner
    models:/simrefinery-refiner@champion` (the checkpoint logged beside the registered model),
    killed mid-job, rerun: it resumes and ends with every frame refined as the plain torch
    loop refines it. (Both runs join the test worker's Ray, as a cluster is joined: a Ray start-up
    fewer each.)"""
    import signal
    import subprocess
    import time
    from PIL import Image
    from refiner.simgan.refine_job import refine_in_process
    from refiner.simgan.trainer import load_refiner
    repo, env, _ = project
    env = {**env, **joining(local_ray)}
    frames = tmp_path / "frames"
    frames.mkdir()
    pixels = np.random.default_rng(5).integers(0, 256, (1100, 8, 8), dtype=np.uint8)
    for i, frame in enumerate(pixels):
        Image.fromarray(frame).save(frames / f"frame-{i:05d}.png")
    args = ["refine", str(frames), str(tmp_path / "out"), "--refiner", "models:/simrefinery-refiner@champion",
            "--batch-size", "256"]
    job = subprocess.Popen([sys.executable, "-c", SLOW_REFINE, *args], cwd=repo, env=env, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not list(tmp_path.glob(".out.partial-*/part-*.parquet")):
        assert job.poll() is None, "the job ended before it could be killed"
        assert time.monotonic() < deadline, "no refined part written in 240 s"
        time.sleep(0.1)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    assert not (tmp_path / "out").exists()  # nothing committed
    inputs = data.open_dataset(tmp_path / "out-input")  # the frames, streamed in parts of 1024
    assert [f["rows"] for f in inputs.manifest["files"]] == [1024, 76]
    out = sh(sys.executable, "-m", "refiner.cli", *args, cwd=repo, env=env)
    assert re.search(r"resuming, [12] of 2 parts already refined", out)  # 2: the kill landed before the commit
    refined = data.validate(tmp_path / "out").load()
    assert list(refined["id"]) == [f"frame-{i:05d}.png" for i in range(1100)]
    champion = load_refiner(repo / "models/refiner/refiner.pt", (8, 8))  # a fresh project: its refiner is champion
    expected = refine_in_process(champion, pixels.astype(np.float32) / 255)
    assert np.abs(refined["image"] - expected).max() <= 0.5 / 255 + 1e-6
    # its own MLflow run: lineage goes from the output to the frames, and through the champion to its training
    tree = sh(sys.executable, "-m", "refiner.cli", "lineage", str(tmp_path / "out"), cwd=repo, env=env)
    [refine_run] = set(re.findall(r"run simrefinery refine ([0-9a-f]{32})", tree))  # it made the frames' dataset too
    assert "simrefinery-refiner v1 @champion" in tree and "run train_refiner " in tree
    assert re.search(r"dataset frames [0-9a-f]{16}\n *└─ run simrefinery refine " + refine_run, tree)
    assert "no run in this store produced it" not in tree.split("run train_refiner")[0]


@pytest.mark.slow
def test_a_sweep_profile_is_a_dvc_experiment_that_reruns_only_dependent_stages(project, first_refined):
    """`experiments.sweep` runs a profile as `dvc exp run -S ...`: only the stages downstream
    of the changed param rerun, params.yaml is restored, and the new lambda is a new branch
    of the lineage, not an overwrite."""
    repo, env, _ = project
    params_before = (repo / "params.yaml").read_text()
    before = data.open_dataset(repo / "data/synthetic").digest
    output = sh(sys.executable, "-m", "experiments.sweep", "--cached", "--profiles", "lambda-2", cwd=repo, env=env)
    assert stages_run(output) == ["train_refiner", "refine", "train_estimator@refined", "evaluate"]
    assert data.open_dataset(repo / "data/synthetic").digest == before
    assert (repo / "params.yaml").read_text() == params_before
    import torch
    checkpoint = torch.load(repo / "models/refiner/refiner.pt", weights_only=True)  # what the experiment ran with
    assert checkpoint["config"]["lambda"] == 2.0 and checkpoint["config"]["semantic_weight"] == 0.0
    from experiments.sweep import read_rows
    [row] = read_rows(repo / "experiments/results/sweep.json")
    assert row.profile == "lambda-2" and row.report == report_of(repo)  # the experiment's own evaluation
    assert row.cached and row.refiner_train_seconds > 0  # read back from the experiment's MLflow run
    assert "| lambda-2" in (repo / "experiments/results/sweep.md").read_text()
    assert "lambda-2-" in sh("dvc", "exp", "list", cwd=repo, env=env)
    side_by_side = sh(sys.executable, "-m", "refiner.cli", "experiments", cwd=repo, env=env)
    assert max(map(len, side_by_side.splitlines())) <= 120  # `dvc exp show` has 121 columns
    [experiment] = re.findall(r"^└ lambda-2-.*(?:\n {60,}\S+)*", side_by_side, re.MULTILINE)  # its changed params below
    assert f" {headline(row.report)['end_to_end']:.3f} " in experiment.splitlines()[0]
    assert "lambda=2.0" in experiment.split() and "conditional=False" in experiment.split()
    assert "refined" in sh("dvc", "metrics", "show", "--json", cwd=repo, env=env)
    assert "refiner losses" in sh("dvc", "plots", "show", "--json", cwd=repo, env=env)  # losses.csv, drawn
    old_digest, _ = first_refined
    new_tree, old_tree = lineage(repo, env, "data/refined"), lineage(repo, env, old_digest)
    assert "lambda=2.0" in new_tree and "simrefinery-refiner v2" in new_tree
    assert f"lambda={DEFAULT_LAMBDA}" in old_tree and "simrefinery-refiner v1" in old_tree
    assert "lambda=2.0" not in old_tree
