"""Data integrity under bad input, kills, reruns and neighbours: a corpus of bad datasets
written here (as another tool would write them: valid Parquet, a manifest that matches the
files, bad rows inside) goes through the validation pass, the writer and the stages'
``python -m`` entry points; each is refused naming the file, the row id and the problem, and
nothing is committed."""

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from refiner import data
from refiner.simgan.refine_job import refine_dataset
from tests.helpers import KILLED_JOB, job_env, sh, stage_command, uint8_images, world

DIGITS, GAZE = world("digits"), world("gaze")


class Unlabelled:
    """The real pool's 'task' for forging: no label columns."""
    labels = pa.schema([])


def png(pixels: np.ndarray, mode: str = "L") -> bytes:
    from PIL import Image
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, format="PNG")
    return buffer.getvalue()


def digits_rows(ids=("a", "b", "c"), labels=(1, 2, 3), images=None):
    images = [png(p) for p in uint8_images(len(ids))] if images is None else images
    return {"id": list(ids), "image": images, "label": list(labels)}


def gaze_rows(pitch=(0.1, 0.2, 0.3)):
    n = len(pitch)
    return {"id": [f"g{i}" for i in range(n)], "image": [png(p) for p in uint8_images(n, (35, 55))],
            "gaze_pitch": list(pitch), "gaze_yaw": [0.0] * n}


def bad_images(index: int, replacement: bytes) -> list[bytes]:
    images = [png(p) for p in uint8_images(3)]
    images[index] = replacement
    return images


# case -> (task, columns of the one bad part, what the refusal must say)
CORPUS = {
    "duplicate id": (DIGITS, digits_rows(ids=("a", "b", "a")), r"row id='a': id is not unique"),
    "missing id": (DIGITS, digits_rows(ids=("a", None, "c")), r"row 1: id is missing"),
    "label out of range": (DIGITS, digits_rows(labels=(1, 11, 3)), r"row id='b': label outside the classes 0..9"),
    "negative label": (DIGITS, digits_rows(labels=(-1, 2, 3)), r"row id='a': label outside the classes 0..9"),
    "missing label": (DIGITS, digits_rows(labels=(1, None, 3)), r"row id='b': label 'label' is missing"),
    "NaN gaze": (GAZE, gaze_rows(pitch=(0.1, float("nan"), 0.3)), r"row id='g1': label 'gaze_pitch' is NaN"),
    "gaze in degrees": (GAZE, gaze_rows(pitch=(0.1, 0.2, 30.0)), r"row id='g2': gaze outside pitch"),
    "no rows": (DIGITS, digits_rows(ids=(), labels=(), images=[]), r"the dataset has no rows"),
    "9x7 image": (DIGITS, digits_rows(images=bad_images(2, png(np.zeros((9, 7), np.uint8)))),
                  r"row id='c': image is 9x7, the dataset's images are 8x8"),
    "RGB image": (DIGITS, digits_rows(images=bad_images(1, png(np.zeros((8, 8), np.uint8), "RGB"))),
                  r"row id='b': image is 8x8x3, the dataset's images are 8x8"),
    "RGBA image": (DIGITS, digits_rows(images=bad_images(1, png(np.zeros((8, 8), np.uint8), "RGBA"))),
                   r"row id='b': image is not a readable PNG \(PNG mode RGBA"),
    "corrupt PNG": (DIGITS, digits_rows(images=bad_images(0, png(np.zeros((8, 8), np.uint8))[:30])),
                    r"row id='a': image is not a readable PNG"),
}


def forge(path: Path, task, columns: dict, image_shape=(8, 8)) -> Path:
    """A dataset directory as another tool might write one: a Parquet part of the contract's
    schema holding ``columns`` and a manifest whose hashes and counts match it."""
    contract = data.schema_for(task.labels)  # with every column nullable, as other tools write them
    schema = pa.schema([field.with_nullable(True) for field in contract], metadata=contract.metadata)
    values = {**columns, "image": [{"bytes": b, "path": None} for b in columns["image"]],
              "source": ["synthetic"] * len(columns["id"])}
    table = pa.table({field.name: pa.array(values[field.name], field.type) for field in schema}, schema=schema)
    path.mkdir(parents=True)
    part = path / "part-00000.parquet"
    pq.write_table(table, part)
    manifest = {"format": data.FORMAT, "num_rows": table.num_rows, "image_shape": list(image_shape),
                "label_columns": task.labels.names, "schema": {f.name: str(f.type) for f in schema},
                "files": [{"name": part.name, "rows": table.num_rows, "sha256": data.file_sha256(part)}],
                "producer": "another-tool", "params": {}, "upstream": {}}
    (path / data.MANIFEST).write_text(json.dumps(manifest))
    return path


@pytest.mark.parametrize("case", CORPUS)
def test_validation_refuses_each_bad_dataset_naming_file_row_and_problem(case, tmp_path):
    task, columns, message = CORPUS[case]
    path = forge(tmp_path / "bad", task, columns, (35, 55) if task is GAZE else (8, 8))
    where = "bad" if case == "no rows" else r"part-00000.parquet"
    with pytest.raises(data.DatasetError, match=f"{where}: {message}"):
        data.validate(path, task.bad_labels)


# a forged good dataset's manifest, changed -> what the refusal must say (the trust boundary)
MANIFEST_CORPUS = {
    "a file outside the dataset": (lambda m: m["files"][0].update(name="../real/test/part-00000.parquet"),
                                   r"files\.0\.name: '\.\./real/test/part-00000\.parquet' is not one of this dataset's parts"),
    "an absolute path": (lambda m: m["files"][0].update(name="/etc/part-00000.parquet"), r"files\.0\.name: '/etc/"),
    "no files": (lambda m: m.pop("files"), r"files: Field required"),
    "files not a list": (lambda m: m.update(files="part-00000.parquet"), r"files: Input should be a valid list"),
    "image declared a string": (lambda m: m["schema"].update(image="string"),
                                r"schema: column 'image' is 'string', the contract's is 'struct<bytes: binary"),
    "4-channel images": (lambda m: m.update(image_shape=[8, 8, 4]), r"image_shape \[8, 8, 4\]: images are H x W"),
    "rows that do not add up": (lambda m: m.update(num_rows=5000), r"num_rows 5000, but its files list 3 rows"),
    "an unknown key": (lambda m: m.update(owner="me"), r"owner: Extra inputs are not permitted"),
    "a string row count": (lambda m: m["files"][0].update(rows="3"), r"files\.0\.rows: Input should be a valid integer"),
    "the image as a label": (lambda m: m["label_columns"].append("image"),  # training crashed on it
                             r"label_columns \['label', 'image'\]: image is the contract's own column, not a label"),
}


@pytest.mark.parametrize("case", MANIFEST_CORPUS)
def test_a_manifest_is_held_to_the_contract_in_one_line(case, tmp_path):
    change, message = MANIFEST_CORPUS[case]
    path = forge(tmp_path / "bad", DIGITS, digits_rows())
    manifest = json.loads((path / data.MANIFEST).read_text())
    change(manifest)
    (path / data.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(data.DatasetError, match=f"^{re.escape(str(path / data.MANIFEST))}: {message}"):
        data.validate(path)


def test_a_part_linked_from_outside_the_dataset_is_refused(tmp_path):
    """The issue's attack: a manifest naming the labelled real test split. A name outside is
    refused by the manifest's model; a symlinked part by where it resolves."""
    real = forge(tmp_path / "real", DIGITS, digits_rows())
    path = forge(tmp_path / "synthetic", DIGITS, digits_rows(ids=("x", "y", "z")))
    (path / "part-00000.parquet").unlink()
    (path / "part-00000.parquet").symlink_to(real / "part-00000.parquet")
    manifest = json.loads((path / data.MANIFEST).read_text())
    manifest["files"][0]["sha256"] = data.file_sha256(real / "part-00000.parquet")
    (path / data.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(data.DatasetError, match=r"part-00000.parquet: a link to .*real/part-00000.parquet, outside"):
        data.validate(path)


def test_a_label_of_another_type_than_the_tasks_is_refused_for_training(tmp_path):
    """Booleans where the digits class is an integer: valid as a dataset, refused as the task's training set."""
    boolean = type("Booleans", (), {"labels": pa.schema([("label", pa.bool_())])})
    path = forge(tmp_path / "bools", boolean, {**digits_rows(), "label": [True, False, True]})
    data.validate(path)
    with pytest.raises(data.DatasetError, match=r"bools: label 'label' is bool, the task's is int64"):
        data.open_training_set(path, DIGITS.labels, DIGITS.bad_labels)


@pytest.mark.parametrize("case", CORPUS)
def test_writer_refuses_the_same_rows_and_keeps_the_previous_dataset(case, tmp_path):
    task, columns, message = CORPUS[case]
    source = forge(tmp_path / "source", task, columns, (35, 55) if task is GAZE else (8, 8))
    table = pq.read_table(source / "part-00000.parquet")
    target = tmp_path / "target"
    good = {"id": ["ok"], "image": [png(uint8_images(1, (35, 55) if task is GAZE else (8, 8))[0])],
            **{name: [0.0 if task is GAZE else 0] for name in task.labels.names}}
    data.write_dataset(target, np.array(good["id"], dtype=object),
                          np.stack([data.decode_png(b) for b in good["image"]]),
                          {k: np.array(good[k]) for k in task.labels.names}, label_schema=task.labels,
                          source="synthetic", producer="test")
    before = data.open_dataset(target).digest
    with pytest.raises(data.DatasetError, match=message.replace("the dataset has no rows", "no rows to write")):
        with data.open_writer(target, label_schema=task.labels, producer="test",
                                   bad_labels=task.bad_labels) as writer:
            writer.write_part(0, table)
    assert data.open_dataset(target).digest == before
    assert not list(tmp_path.glob(".target.tmp-*"))


# ---------------------------------------------------------------- the stages' entry points

@pytest.fixture(scope="module")
def workspace(dvc_project, tmp_path_factory):
    """A copy of the tiny reproduced project: stages run here as users run them."""
    repo, env, _, _ = dvc_project
    copy = tmp_path_factory.mktemp("workspace") / "project"
    shutil.copytree(repo, copy, symlinks=True)
    return copy, env


def run_stage(workspace, name: str):
    """The stage as dvc.yaml runs it, in the workspace."""
    repo, env = workspace
    return subprocess.run(stage_command(name, repo), cwd=repo, env=env, capture_output=True, text=True, timeout=300)


def refusal(result) -> str:
    """The one line a refused stage prints (no traceback)."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr.strip().splitlines()[-1]


@contextlib.contextmanager
def replaced(workspace, relative: str, task, columns, image_shape=(8, 8)):
    """Swap one of the workspace's datasets for a bad one, and back."""
    repo, _ = workspace
    path, kept = repo / relative, repo / f"{relative}.kept"
    os.replace(path, kept)
    try:
        forge(path, task, columns, image_shape)
        yield
    finally:
        shutil.rmtree(path)
        os.replace(kept, path)


def test_refine_refuses_bad_synthetic_datasets_before_ray_and_commits_nothing(workspace):
    repo, _ = workspace
    before = data.open_dataset(repo / "data/refined").digest
    # one case per kind of check: a label, an image, the whole dataset (the two tests above run every case)
    for case in ("label out of range", "9x7 image", "no rows"):
        task, columns, message = CORPUS[case]
        with replaced(workspace, "data/synthetic", task, columns):
            started = time.monotonic()
            line = refusal(run_stage(workspace, "refine"))
        where = "data/synthetic" if case == "no rows" else r"data/synthetic/part-00000.parquet"
        assert re.search(f"^error: {where}: {message}", line), (case, line)
        assert time.monotonic() - started < 60, "refused only after starting work"
        assert data.open_dataset(repo / "data/refined").digest == before, case


@pytest.mark.parametrize("stage, relative, case", [
    ("train_refiner", "data/real/unlabeled", "9x7 image"),
    ("train_estimator@synthetic", "data/synthetic", "label out of range"),
    ("evaluate", "data/real/test", "duplicate id"),
], ids=["train_refiner", "train_estimator", "evaluate"])  # no "@" in an id: xdist reads it as a group
def test_other_stages_refuse_bad_inputs_in_one_line(workspace, stage, relative, case):
    repo, _ = workspace
    task, columns, message = CORPUS[case]
    if relative == "data/real/unlabeled":  # the pool has no label columns
        columns, task = {"id": columns["id"], "image": columns["image"]}, Unlabelled
    outputs = {p: p.stat().st_mtime_ns for p in (repo / "models").rglob("*") if p.is_file()}
    with replaced(workspace, relative, task, columns):
        line = refusal(run_stage(workspace, stage))
    assert re.search(f"^error: {relative}/part-00000.parquet: {message}", line), line
    assert {p: p.stat().st_mtime_ns for p in (repo / "models").rglob("*") if p.is_file()} == outputs


def test_train_refiner_refuses_too_few_real_images(workspace):
    few = {"id": [f"r{i}" for i in range(5)], "image": [png(p) for p in uint8_images(5)]}
    with replaced(workspace, "data/real/unlabeled", Unlabelled, few):
        line = refusal(run_stage(workspace, "train_refiner"))
    assert "data/real/unlabeled: 5 images; the refiner needs at least 16" in line


def test_ingest_refuses_a_source_with_no_usable_images_in_one_line(workspace):
    repo, env = workspace
    (repo / "eyes").mkdir()  # a folder in the project: its name, not a machine path, goes into the params
    (repo / "eyes" / "notes.txt").write_text("not an eye")
    params = repo / "params.yaml"
    kept = params.read_text()
    try:
        edited = yaml.safe_load(kept)
        edited.update(task="gaze", gaze={**edited["gaze"], "real": "eyes"})
        edited["train_estimator"]["adaptation"] = "none"
        edited["train_refiner"]["conditional"] = False  # gaze has no classes
        params.write_text(yaml.safe_dump(edited))
        line = refusal(run_stage(workspace, "ingest"))
    finally:
        params.write_text(kept)
    assert line == "error: eyes: no usable image folder images (see the skipped list above)"


# ---------------------------------------------------------------- resume and neighbours

def test_a_rerun_with_another_precision_starts_clean(local_ray, refine_inputs, tmp_path, monkeypatch):
    source, checkpoint = refine_inputs
    out = tmp_path / "refined"
    write_part, written = data.DatasetWriter.write_part, []

    def dies_after_two_parts(self, index, table):  # injected fault: the job is killed mid-way
        if len(written) == 2:
            raise KeyboardInterrupt("killed")
        write_part(self, index, table)
        written.append(index)

    monkeypatch.setattr(data.DatasetWriter, "write_part", dies_after_two_parts)
    with pytest.raises(KeyboardInterrupt):
        refine_dataset(source, checkpoint, out, batch_size=16, num_actors=1, precision="fp32", progress=False)
    monkeypatch.setattr(data.DatasetWriter, "write_part", write_part)
    assert len(list(tmp_path.glob(".refined.partial-*/part-*.parquet"))) == 2

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        refined = refine_dataset(source, checkpoint, out, batch_size=16, num_actors=1, precision="bf16",
                                 progress=False)
    assert "starting clean" in printed.getvalue() and "resuming" not in printed.getvalue()
    clean = refine_dataset(source, checkpoint, tmp_path / "clean-bf16", batch_size=16, num_actors=1,
                           precision="bf16", progress=False)
    assert refined.digest == clean.digest  # no fp32 part mixed in
    assert refined.manifest["params"]["precision"] == "bf16"




def test_a_second_refine_on_the_same_target_is_refused_and_the_first_completes(local_ray, refine_inputs, tmp_path):
    source, checkpoint = refine_inputs
    out = tmp_path / "refined"
    first = subprocess.Popen([sys.executable, "-c", KILLED_JOB, str(source.path), str(checkpoint), str(out)],
                             env=job_env(local_ray), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".refined.partial-*/part-*.parquet")):
        assert first.poll() is None and time.monotonic() < deadline, "the first job never started writing"
        time.sleep(0.1)
    with pytest.raises(data.DatasetError, match=r"refined: another process is writing this dataset"):
        refine_dataset(source, checkpoint, out, batch_size=16, num_actors=1, progress=False)
    output, _ = first.communicate(timeout=300)
    assert first.returncode == 0, output
    clean = refine_dataset(source, checkpoint, tmp_path / "alone", batch_size=16, num_actors=1, progress=False)
    assert data.validate(out).digest == clean.digest


@pytest.fixture(scope="module")
def refine_inputs(tmp_path_factory):
    """Eight small synthetic parts and a briefly trained refiner."""
    import torch
    from refiner.config import SimGANParams
    from refiner.simgan.trainer import SimGANTrainer
    root = tmp_path_factory.mktemp("refine-inputs")
    n = 8 * 20
    data.write_dataset(root / "synthetic", np.array([f"syn-{i:04d}" for i in range(n)], dtype=object),
                          uint8_images(n, seed=2), {"label": np.arange(n) % 10}, source="synthetic",
                          producer="test", rows_per_file=20)
    rng = np.random.default_rng(0)
    trainer = SimGANTrainer(rng.random((64, 8, 8), dtype=np.float32), rng.random((64, 8, 8), dtype=np.float32),
                            SimGANParams(channels=8, num_blocks=1, disc_layers=[[8, 1]], batch_size=16,
                                         pretrain_refiner_steps=2, pretrain_disc_steps=2, steps=3, history_size=32))
    trainer.train(progress=False)
    torch.save(trainer.checkpoint((8, 8)), root / "refiner.pt")
    return data.open_dataset(root / "synthetic"), root / "refiner.pt"


# ---------------------------------------------------------------- DVC outputs and MLflow runs

def test_a_retrain_with_identical_weights_leaves_the_stages_downstream_up_to_date(workspace):
    """No run id or wall-clock time in a DVC output: retraining the refiner reproduces its
    weights byte for byte (CPU, same seed), and nothing downstream is out of date."""
    repo, env = workspace
    assert "Data and pipelines are up to date" in sh("dvc", "status", cwd=repo, env=env)
    before = (repo / "models/refiner.mlflow.json").read_text()
    sh("dvc", "repro", "--force", "--single-item", "train_refiner", cwd=repo, env=env)
    assert (repo / "models/refiner.mlflow.json").read_text() != before  # a new MLflow run and model...
    status = sh("dvc", "status", cwd=repo, env=env)
    assert "Data and pipelines are up to date" in status, status  # ...and the same DVC outputs


def stage_runs(repo: Path, stage: str) -> list:
    import mlflow
    client = mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("simrefinery")
    return client.search_runs([experiment.experiment_id], filter_string=f"tags.`simrefinery.stage` = '{stage}'",
                              order_by=["attributes.start_time DESC"])


def start_and_wait_for_run(workspace, stage: str):
    repo, env = workspace
    seen = {run.info.run_id for run in stage_runs(repo, stage)}
    process = subprocess.Popen(stage_command(stage, repo), cwd=repo, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while True:
        new = [run for run in stage_runs(repo, stage) if run.info.run_id not in seen]
        if new:
            return process, new[0].info.run_id
        assert process.poll() is None and time.monotonic() < deadline, "the stage never started its run"
        time.sleep(0.2)


def run_status(repo: Path, run_id: str) -> str:
    import mlflow
    return mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow.db'}").get_run(run_id).info.status


# train_refiner, SIGKILLed right after it saves refiner.pt (an injected fault): python -c KILLED_AFTER_SAVE ARGS
KILLED_AFTER_SAVE = """
import os, signal, sys, torch
save = torch.save
def save_then_die(obj, path, *args, **kwargs):
    save(obj, path, *args, **kwargs)
    if str(path).endswith("refiner.pt"):
        os.kill(os.getpid(), signal.SIGKILL)
torch.save = save_then_die
from stages import train_refiner
train_refiner.main(sys.argv[1:])
"""


def test_a_model_is_committed_whole_and_by_one_writer(workspace):
    """The issue's kill: refiner.pt saved, then SIGKILL. The previous model, its MLflow record,
    metrics, curves and samples are all still there, byte for byte; while a writer holds the
    model's lock, a second train_refiner is refused in one line."""
    from filelock import FileLock
    repo, env = workspace
    outputs = ["models/refiner/refiner.pt", "models/refiner.mlflow.json", "metrics/refiner.json",
               "plots/refiner/losses.csv", "plots/refiner/samples.png"]
    before = {name: (repo / name).read_bytes() for name in outputs}
    killed = subprocess.run([sys.executable, "-c", KILLED_AFTER_SAVE, *stage_command("train_refiner", repo)[3:]],
                            cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    assert list((repo / "models").glob(".refiner.staging/refiner/refiner.pt"))  # it was saved, in staging
    assert {name: (repo / name).read_bytes() for name in outputs} == before
    with FileLock(repo / "models" / ".refiner.lock"):
        assert "models/refiner: another process is writing it" in refusal(run_stage(workspace, "train_refiner"))
    assert {name: (repo / name).read_bytes() for name in outputs} == before


def test_an_estimator_is_refused_for_a_dataset_it_was_not_trained_on(tmp_path):
    from refiner.errors import CheckpointError
    from refiner.estimator.checkpoint import load_model, save_model
    network = DIGITS.head.estimator((8, 8))
    save_model(network, DIGITS, (8, 8), 0, tmp_path / "model-seed0.pt", "a" * 64)
    load_model(tmp_path / "model-seed0.pt", DIGITS, "a" * 64)
    with pytest.raises(CheckpointError, match=r"model-seed0.pt: trained on the dataset aaaaaaaaaaaa, not on bbbbbbbbbbbb"):
        load_model(tmp_path / "model-seed0.pt", DIGITS, "b" * 64)


def test_a_terminated_stage_ends_its_run_killed_and_a_sigkilled_one_is_ended_at_the_next_start(workspace):
    repo, env = workspace
    process, run_id = start_and_wait_for_run(workspace, "train_refiner")
    process.terminate()  # SIGTERM, as a scheduler or `kill` sends it
    process.wait(timeout=60)
    assert process.returncode != 0 and run_status(repo, run_id) == "KILLED"

    process, run_id = start_and_wait_for_run(workspace, "train_refiner")
    process.kill()  # SIGKILL: nothing runs in the process after it
    process.wait(timeout=60)
    assert run_status(repo, run_id) == "RUNNING"
    next_stage = run_stage(workspace, "render")  # any stage's next start cleans up (render: the quickest)
    assert next_stage.returncode == 0, next_stage.stderr
    assert run_status(repo, run_id) == "KILLED"


def test_no_machine_path_in_runs_logged_models_or_model_files(workspace):
    """The project writes repository-relative names only, and keeps a local origin (the
    workspace's is this checkout's path) out of MLflow's repoURL tag. What MLflow itself
    records: its store's absolute artifact location (runs, logged models, model versions,
    MLmodel files); torch.export writes stack traces with file paths into model.pt2."""
    import sqlite3
    repo, _ = workspace
    roots = (str(repo.resolve().parents[1]), str(Path(__file__).resolve().parents[1]))  # tests' temp root, this checkout
    store = sqlite3.connect(repo / "mlflow.db")
    for table, column in [("tags", "value"), ("params", "value"), ("logged_model_tags", "tag_value"),
                          ("logged_model_params", "param_value"), ("model_version_tags", "value"), ("inputs", "source_id"),
                          ("datasets", "dataset_source")]:
        leaked = store.execute(f"select {column} from {table} where {column} like ? or {column} like ?",
                               tuple(f"%{root}%" for root in roots)).fetchall()
        assert not leaked, (table, leaked[:3])
    for file in (repo / "models").rglob("*"):
        if file.is_file():
            assert not any(root.encode() in file.read_bytes() for root in roots), file
