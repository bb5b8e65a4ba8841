"""The Ray Data refine job against a plain torch loop, on a real local Ray."""

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from refiner import data
from refiner.simgan.refine_job import NO_METRICS, refine_dataset, refine_in_process
from refiner.config import SimGANParams
from refiner.errors import CheckpointError
from refiner.simgan.trainer import SimGANTrainer, load_refiner
from tests.helpers import KILLED_JOB, ROOT, free_port, job_env


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A briefly trained (so not identity) refiner checkpoint for 8x8 images."""
    rng = np.random.default_rng(0)
    synthetic, real = rng.random((64, 8, 8), dtype=np.float32), rng.random((64, 8, 8), dtype=np.float32)
    config = SimGANParams(channels=8, num_blocks=1, disc_layers=[[8, 1]], batch_size=16,
                          pretrain_refiner_steps=2, pretrain_disc_steps=2, steps=3, history_size=32)
    trainer = SimGANTrainer(synthetic, real, config)
    trainer.train(progress=False)
    path = tmp_path_factory.mktemp("refiner") / "refiner.pt"
    torch.save(trainer.checkpoint((8, 8)), path)
    return path


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "synthetic"
    n = 230
    images = np.random.default_rng(1).integers(0, 256, (n, 8, 8), dtype=np.uint8)
    ids = np.array([f"syn-{i:04d}" for i in range(n)], dtype=object)
    data.write_dataset(path, ids, images, {"label": np.arange(n) % 10}, source="synthetic",
                          producer="test", rows_per_file=60)  # several files
    return data.open_dataset(path)


@pytest.fixture(scope="module")
def refined(local_ray, synthetic, checkpoint, tmp_path_factory):
    """``synthetic`` refined by the Ray job on two actors: the tests that compare another run
    with it share this one (each job starts its actors afresh). The raw and S3 runs use one
    actor: the same batches, so the same bytes, whatever the number of actors."""
    return refine_dataset(synthetic, checkpoint, tmp_path_factory.mktemp("refined") / "refined", batch_size=32,
                          num_actors=2, actor_num_cpus=0.5, progress=False)


@pytest.fixture(scope="module")
def synthetic_many(tmp_path_factory):
    """Eight small parts, so a job can be killed between parts."""
    path = tmp_path_factory.mktemp("data") / "synthetic_many"
    n = 8 * 20
    images = np.random.default_rng(2).integers(0, 256, (n, 8, 8), dtype=np.uint8)
    ids = np.array([f"syn-{i:04d}" for i in range(n)], dtype=object)
    data.write_dataset(path, ids, images, {"label": np.arange(n) % 10}, source="synthetic",
                          producer="test", rows_per_file=20)
    return data.open_dataset(path)


def test_ray_refine_matches_plain_torch_loop(synthetic, checkpoint, refined):
    assert [f["rows"] for f in refined.manifest["files"]] == [60, 60, 60, 50]  # the input's parts
    source, out = synthetic.load(), data.validate(refined.path).load()
    assert list(out["id"]) == list(source["id"])  # every id once, in order
    assert np.array_equal(out["label"], source["label"])
    expected = refine_in_process(load_refiner(checkpoint, (8, 8)), source["image"])
    assert np.abs(out["image"] - expected).max() <= 0.5 / 255 + 1e-6  # only 8-bit rounding
    assert np.abs(out["image"] - source["image"]).mean() > 0.01  # it really refined
    assert {s for t in [f for _, f in refined.tables()] for s in t.column("source").to_pylist()} == {"refined"}


def test_ray_refine_reads_and_writes_raw_images_with_the_same_pixels(synthetic, checkpoint, refined, tmp_path):
    source = synthetic.load()
    raw_source = tmp_path / "raw-synthetic"
    data.write_dataset(raw_source, source["id"], data.to_uint8(source["image"]), {"label": source["label"]},
                          source="synthetic", producer="test", rows_per_file=60, image_encoding="raw")
    from_raw = refine_dataset(data.open_dataset(raw_source), checkpoint, tmp_path / "from-raw", batch_size=32,
                              num_actors=1, progress=False, image_encoding="raw")
    assert from_raw.manifest["image_encoding"] == "raw" and refined.manifest["image_encoding"] == "png"
    raw, png = data.validate(from_raw.path).load(), data.validate(refined.path).load()
    assert list(raw["id"]) == list(png["id"]) and np.array_equal(raw["image"], png["image"])


def test_ray_refine_reads_from_and_writes_to_s3_with_the_local_runs_digest(s3_env, synthetic, checkpoint, refined):
    """Ray's read tasks fetch the parts from the bucket themselves (no shared filesystem)."""
    from tests.helpers import BUCKET
    for file in [*synthetic.files, synthetic.path / data.MANIFEST]:  # the same bytes, in the bucket
        s3_env.upload_file(str(file), BUCKET, f"synthetic/{file.name}")
    source = data.open_dataset(f"s3://{BUCKET}/synthetic")
    assert source.digest == synthetic.digest
    remote = refine_dataset(source, checkpoint, f"s3://{BUCKET}/refined", batch_size=32, num_actors=1, progress=False)
    # the local run's digest: the job is deterministic, whatever its storage and number of actors
    assert data.validate(f"s3://{BUCKET}/refined").digest == remote.digest == refined.digest


def test_a_small_refine_on_two_actors_warns_of_nothing(local_ray, checkpoint, tmp_path):
    """One part smaller than a batch, two actors asked for: no deprecated Ray call of the
    project's (``ray_remote_args``), no warning that an actor got no input, no notice that
    Ray's progress bars are off (the job's own bar counts the rows)."""
    import logging
    import warnings
    data.write_dataset(tmp_path / "small", np.array([f"s{i}" for i in range(10)], dtype=object),
                       np.zeros((10, 8, 8), np.uint8), {"label": np.arange(10)}, source="synthetic", producer="test")
    records, handler = [], logging.Handler(logging.WARNING)
    handler.emit = records.append
    logging.getLogger("ray.data").addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            refine_dataset(data.open_dataset(tmp_path / "small"), checkpoint, tmp_path / "out", batch_size=32,
                           num_actors=2, actor_num_cpus=0.5, progress=False)
    finally:
        logging.getLogger("ray.data").removeHandler(handler)
    assert [str(w.message) for w in caught] == []
    assert [r.getMessage() for r in records] == []
    assert data.validate(tmp_path / "out").num_rows == 10


def test_mismatched_checkpoint_fails_before_any_work(local_ray, checkpoint, tmp_path):
    wide = tmp_path / "wide"
    data.write_dataset(wide, np.array(["a"], dtype=object), np.zeros((1, 35, 55), np.uint8),
                          {"label": np.array([0])}, source="synthetic", producer="test")
    with pytest.raises(CheckpointError, match=r"refiner.pt: refiner trained on \[8, 8\] images, data has \[35, 55\]"):
        refine_dataset(data.open_dataset(wide), checkpoint, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_killed_refine_resumes_and_completes_without_duplicates(local_ray, synthetic_many, checkpoint, tmp_path):
    out = tmp_path / "refined"
    job = subprocess.Popen([sys.executable, "-c", KILLED_JOB, str(synthetic_many.path), str(checkpoint), str(out)],
                           env=job_env(local_ray), start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    staged = []
    while len(staged) < 2:
        assert job.poll() is None, "the job ended before it could be killed"
        assert time.monotonic() < deadline, "no parts written in 120 s"
        time.sleep(0.1)
        staged = list(tmp_path.glob(".refined.partial-*/part-*.parquet"))
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    with pytest.raises(data.DatasetError):
        data.open_dataset(out)  # a reader never sees the partial dataset
    done_before = len(list(tmp_path.glob(".refined.partial-*/part-*.parquet")))
    assert 2 <= done_before < len(synthetic_many.files)

    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        refined = refine_dataset(synthetic_many, checkpoint, out, batch_size=16, num_actors=1, progress=False)
    assert f"resuming, {done_before} of {len(synthetic_many.files)} parts already refined" in output.getvalue()
    ids = list(refined.load()["id"])
    assert ids == list(synthetic_many.load()["id"]) and len(set(ids)) == len(ids)
    fresh = refine_dataset(synthetic_many, checkpoint, tmp_path / "uninterrupted", batch_size=16, num_actors=1,
                           progress=False)
    assert refined.digest == fresh.digest  # resumed output is byte-identical to an uninterrupted run


def test_corrupt_checkpoint_is_refused(tmp_path):
    bad = tmp_path / "refiner.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="refiner.pt: not a usable refiner checkpoint"):
        load_refiner(bad)


def test_checkpoint_loads_with_weights_only(checkpoint):
    state = torch.load(io.BytesIO(checkpoint.read_bytes()), weights_only=True)
    assert state["image_shape"] == [8, 8] and "state_dict" in state


CLIENT = "import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); print('connected')"


def test_local_ray_keeps_token_authentication_and_refuses_a_client_with_a_wrong_token(local_ray, tmp_path):
    """Ray 2.60's local gcs_server and raylet listen on every interface whatever the node
    address (measured): what guards them is Ray's token authentication, its default, which
    the project leaves on: a client with a wrong token is refused (the test's own Ray, started
with the token, is the one that connects)."""
    address = local_ray.get_runtime_context().gcs_address
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    wrong = subprocess.run([sys.executable, "-c", CLIENT, address],
                           env={**env, "HOME": str(tmp_path), "RAY_AUTH_TOKEN": "f" * 64,
                                "RAY_gcs_server_port_wait_time_s": "2"},  # refused in 2 tries, not 20
                           capture_output=True, text=True, timeout=120)
    assert wrong.returncode != 0 and "Authentication token is missing or incorrect" in wrong.stderr


# a local Ray as the refine job starts it, after a Ray Data job on an actor pool (as refine
# runs) has started its workers: prints, for each listener of its own processes, the process,
# address, port and the HTTP status of GET /metrics without a token (0: no HTTP answer)
LISTENERS = """
import json, time, urllib.error, urllib.request
from concurrent.futures import ThreadPoolExecutor
import psutil, ray
from refiner.simgan.refine_job import ensure_ray
ensure_ray()
class Double:
    def __call__(self, batch):
        return {"id": batch["id"] * 2}
assert ray.data.range(64).map_batches(Double, compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0.5).sum("id") == 4032
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    mine = {child.pid: child.name() for child in psutil.Process().children(recursive=True)}
    if "ray::DashboardAgent" in mine.values():
        break
    time.sleep(1)
time.sleep(5)  # the dashboard's and the monitor's servers start after the agent
def get_metrics(listener):
    host = listener.laddr.ip if listener.laddr.ip not in ("0.0.0.0", "::") else "127.0.0.1"
    try:
        status = urllib.request.urlopen(f"http://{host}:{listener.laddr.port}/metrics", timeout=2).status
    except urllib.error.HTTPError as refused:
        status = refused.code
    except Exception:
        status = 0
    return [mine[listener.pid], listener.laddr.ip, listener.laddr.port, status]
listening = [c for c in psutil.net_connections("inet") if c.status == "LISTEN" and c.pid in mine]
with ThreadPoolExecutor(len(listening)) as pool:  # at once: a gRPC port never answers a GET (2 s each)
    for answer in pool.map(get_metrics, listening):
        print(json.dumps(answer))
"""


def ray_listeners(*settings: dict) -> list[list[tuple[str, str, int, int]]]:
    """The probe's findings on one local Ray per environment ``settings``, run side by side (each
    mostly waits for Ray's servers)."""
    env = {key: value for key, value in os.environ.items() if key not in ("RAY_ADDRESS", *NO_METRICS)}
    probes = [subprocess.Popen([sys.executable, "-c", LISTENERS], env={**env, **extra, "PYTHONPATH": str(ROOT)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for extra in settings]
    found = []
    for probe in probes:
        out, err = probe.communicate(timeout=240)
        assert probe.returncode == 0, err[-3000:]
        found.append([tuple(json.loads(line)) for line in out.splitlines()])
    return found


def test_a_local_refine_leaves_no_listener_answering_without_a_token():
    """Ray serves Prometheus metrics without a token on every interface from three processes
    (dashboard agent, dashboard, autoscaler monitor); the refine job's local Ray starts none of
    them. Its other listeners (gcs_server, raylet, workers: gRPC with Ray's token; the agent's
    HTTP server: 401 without it) answer no unauthenticated GET. The control, Ray's metrics
    switched back on at ports of the test's choosing, shows that the probe sees all three."""
    ports = {"DASHBOARD_METRIC_PORT": free_port(), "AUTOSCALER_METRIC_PORT": free_port()}
    control, listeners = ray_listeners(
        {"RAY_enable_metrics_collection": "1", **{key: str(port) for key, port in ports.items()}}, {})
    served = {(name, port) for name, _, port, status in control if status == 200}
    assert {port for _, port in served} >= set(ports.values())
    assert "ray::DashboardAgent" in {name for name, _ in served}
    assert {"gcs_server", "raylet"} <= {name for name, *_ in listeners}  # the probe saw Ray's own servers
    assert [listener for listener in listeners if listener[3] == 200] == []


def test_simrefinery_refine_takes_a_dataset_or_a_folder_of_frames_and_leaves_params_alone(local_ray, synthetic,
                                                                                          checkpoint, tmp_path,
                                                                                          monkeypatch):
    """The front door: `simrefinery refine SOURCE OUT --refiner DIR`, labels carried through;
    frames of another size or colour than the refiner's are refused, naming both, or with
    --resize read at its size; real rows are refused. (An interrupted job resumes:
    test_killed_refine_resumes_and_completes_without_duplicates.)"""
    from PIL import Image
    from refiner.cli import main as cli
    monkeypatch.chdir(tmp_path)
    cli(["refine", str(synthetic.path), "refined", "--refiner", str(checkpoint.parent), "--batch-size", "64"])
    source, out = synthetic.load(), data.validate(tmp_path / "refined").load()
    assert list(out["id"]) == list(source["id"]) and np.array_equal(out["label"], source["label"])
    expected = refine_in_process(load_refiner(checkpoint, (8, 8)), source["image"])
    assert np.abs(out["image"] - expected).max() <= 0.5 / 255 + 1e-6
    cli(["refine", str(synthetic.path), "by-file", "--refiner", str(checkpoint), "--batch-size", "64"])
    assert data.open_dataset(tmp_path / "by-file").digest == data.open_dataset(tmp_path / "refined").digest  # one name
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(5):  # 16x16 frames: read at the refiner's 8x8 when asked
        Image.fromarray(np.full((16, 16), 40 * i, np.uint8)).save(frames / f"f{i}.png")
    with pytest.raises(SystemExit, match=r"f0.png is 16x16 \(grey\); the refiner takes 8x8 \(grey\) frames \(--resize"):
        cli(["refine", "frames", "out/frames", "--refiner", str(checkpoint)])
    colour = tmp_path / "colour"
    colour.mkdir()
    Image.fromarray(np.stack([np.full((8, 8), 10 * c, np.uint8) for c in range(3)], -1)).save(colour / "c.png")
    with pytest.raises(SystemExit, match=r"c.png is 8x8x3 \(RGB\); the refiner takes 8x8 \(grey\)"):
        cli(["refine", "colour", "out/colour", "--refiner", str(checkpoint)])
    (tmp_path / "grey-rgb").mkdir()  # an RGB file holding a grey frame is a grey frame
    Image.fromarray(np.full((8, 8, 3), 70, np.uint8)).save(tmp_path / "grey-rgb" / "g.png")
    cli(["refine", "grey-rgb", "grey-rgb-out", "--refiner", str(checkpoint)])
    assert data.validate(tmp_path / "grey-rgb-out").num_rows == 1
    wide = tmp_path / "wide"
    data.write_dataset(wide, np.array(["w0"], dtype=object), np.zeros((1, 8, 12), np.uint8), {"label": np.array([1])},
                       source="synthetic", producer="test")
    with pytest.raises(SystemExit, match=r"its images are 8x12 \(grey\); the refiner takes 8x8 \(grey\)"):
        cli(["refine", str(wide), "out/wide", "--refiner", str(checkpoint), "--resize"])
    assert not any((tmp_path / "out" / name).exists() for name in ("frames", "frames-input", "colour", "wide"))
    cli(["refine", "frames", "out/frames", "--refiner", str(checkpoint), "--resize"])
    refined = data.validate(tmp_path / "out/frames")
    assert refined.num_rows == 5 and refined.manifest["image_shape"] == [8, 8]
    frames_in = data.open_dataset(tmp_path / "out/frames-input").load()
    assert list(frames_in["id"]) == [f"f{i}.png" for i in range(5)]  # the path in the folder
    assert np.allclose(frames_in["image"].mean(axis=(1, 2)), [40 * i / 255 for i in range(5)], atol=1 / 255)
    hub = tmp_path / "hub" / "data"  # a Hugging Face dataset's Parquet export: PNG structs, no id column
    hub.mkdir(parents=True)
    pngs = [{"bytes": data.encode_png(np.full((16, 16), 50 * i, np.uint8)), "path": None} for i in range(3)]
    pq.write_table(pa.table({"image": pngs, "label": [0, 1, 2]}), hub / "train-00000-of-00001.parquet")
    cli(["refine", str(tmp_path / "hub"), "out/hub", "--refiner", str(checkpoint), "--resize"])
    hub_in = data.open_dataset(tmp_path / "out/hub-input").load()
    assert list(hub_in["id"]) == [f"data/train-00000-of-00001.parquet#{i}" for i in range(3)]
    assert np.allclose(hub_in["image"].mean(axis=(1, 2)), [50 * i / 255 for i in range(3)], atol=1 / 255)
    assert data.validate(tmp_path / "out/hub").num_rows == 3
    assert not (tmp_path / "params.yaml").exists()
    assert not (tmp_path / "mlflow.db").exists()  # outside a project: nothing logged, no store made
    real = tmp_path / "real"
    data.write_dataset(real, np.array(["r0"], dtype=object), np.zeros((1, 8, 8), np.uint8), {"label": np.array([1])},
                       source="real", producer="test")
    with pytest.raises(SystemExit, match="real data must not"):
        cli(["refine", str(real), "laundered", "--refiner", str(checkpoint)])
    assert not (tmp_path / "laundered").exists()


def test_simrefinery_refine_refuses_bad_frames_naming_the_source_and_writes_nothing(checkpoint, tmp_path,
                                                                                    monkeypatch):
    """The reliability audit's front-door cases, each refused in one line before any Ray job:
    two frames under one id (one silently replaced the other), a truncated Parquet file
    (pyarrow's traceback), image cells that are file paths (read wherever they pointed), a file
    that is not a checkpoint (torch's unpickling advice), a
    source with no readable frame (refused naming the output)."""
    from refiner.cli import main as cli
    monkeypatch.chdir(tmp_path)
    frames = [{"bytes": data.encode_png(np.full((8, 8), 10 * i, np.uint8)), "path": None} for i in range(6)]
    (tmp_path / "twice").mkdir()
    pq.write_table(pa.table({"image": frames, "id": ["r0", "r1", "r2", "r3", "r4", "r4"]}), "twice/frames.parquet")
    with pytest.raises(SystemExit, match=r"twice/frames.parquet: id 'r4' names two frames"):
        cli(["refine", "twice", "out/twice", "--refiner", str(checkpoint)])
    (tmp_path / "cut").mkdir()
    pq.write_table(pa.table({"image": frames}), "cut/frames.parquet")
    whole = (tmp_path / "cut/frames.parquet").read_bytes()
    (tmp_path / "cut/frames.parquet").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(SystemExit, match=r"cut/frames.parquet: not a readable Parquet file"):
        cli(["refine", "cut", "out/cut", "--refiner", str(checkpoint)])
    (tmp_path / "weights.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match=r"weights.pt: not a refiner checkpoint \(UnpicklingError\)"):
        cli(["refine", "twice", "out/weights", "--refiner", "weights.pt"])
    (tmp_path / "paths").mkdir()  # strings, opened as paths, would read any file on the machine
    (tmp_path / "elsewhere.png").write_bytes(frames[0]["bytes"])
    pq.write_table(pa.table({"image": [str(tmp_path / "elsewhere.png")]}), "paths/frames.parquet")
    with pytest.raises(SystemExit, match=r"paths/frames.parquet: its image column holds string, not image bytes"):
        cli(["refine", "paths", "out/paths", "--refiner", str(checkpoint)])
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty/notes.png").write_text("not an image")
    with pytest.raises(SystemExit, match=r"refine: empty: no readable frame in it \(1 skipped\)"):
        cli(["refine", "empty", "out/empty", "--refiner", str(checkpoint)])
    assert not (tmp_path / "out").exists() or not any(p.name == "_manifest.json" for p in (tmp_path / "out").rglob("*"))
