"""The Ray Data refine job against a plain torch loop, on a real local Ray."""

import io

import numpy as np
import pytest
import torch

from refiner import dataset
from refiner.refine_job import refine_dataset, refine_in_process
from refiner.simgan import CheckpointError, SimGANConfig, SimGANTrainer, load_refiner


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A briefly trained (so not identity) refiner checkpoint for 8x8 images."""
    rng = np.random.default_rng(0)
    synthetic, real = rng.random((64, 8, 8), dtype=np.float32), rng.random((64, 8, 8), dtype=np.float32)
    config = SimGANConfig(channels=8, num_blocks=1, disc_layers=[[8, 1]], batch_size=16,
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
    dataset.write_dataset(path, ids, images, {"label": np.arange(n) % 10}, source="synthetic",
                          producer="test", rows_per_file=60)  # several files
    return dataset.open_dataset(path)


def test_ray_refine_matches_plain_torch_loop(local_ray, synthetic, checkpoint, tmp_path):
    refined = refine_dataset(synthetic, checkpoint, tmp_path / "refined", batch_size=32, num_actors=2,
                             actor_num_cpus=0.5, rows_per_file=100, progress=False)
    assert len(refined.files) == 3
    source, out = synthetic.load(), dataset.validate(tmp_path / "refined").load()
    assert list(out["id"]) == list(source["id"])  # every id once, in order
    assert np.array_equal(out["label"], source["label"])
    expected = refine_in_process(load_refiner(checkpoint, (8, 8)), source["image"])
    assert np.abs(out["image"] - expected).max() <= 0.5 / 255 + 1e-6  # only 8-bit rounding
    assert np.abs(out["image"] - source["image"]).mean() > 0.01  # it really refined
    assert {s for t in [f for _, f in refined.tables()] for s in t.column("source").to_pylist()} == {"refined"}


def test_ray_refine_is_deterministic(local_ray, synthetic, checkpoint, tmp_path):
    digests = {refine_dataset(synthetic, checkpoint, tmp_path / f"r{i}", batch_size=50, num_actors=2,
                              progress=False).digest for i in range(2)}
    assert len(digests) == 1


def test_mismatched_checkpoint_fails_before_any_work(local_ray, checkpoint, tmp_path):
    wide = tmp_path / "wide"
    dataset.write_dataset(wide, np.array(["a"], dtype=object), np.zeros((1, 35, 55), np.uint8),
                          {"label": np.array([0])}, source="synthetic", producer="test")
    with pytest.raises(CheckpointError, match=r"refiner.pt: refiner trained on \[8, 8\] images, data has \[35, 55\]"):
        refine_dataset(dataset.open_dataset(wide), checkpoint, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_corrupt_checkpoint_is_refused(tmp_path):
    bad = tmp_path / "refiner.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="refiner.pt: not a usable refiner checkpoint"):
        load_refiner(bad)


def test_checkpoint_loads_with_weights_only(checkpoint):
    state = torch.load(io.BytesIO(checkpoint.read_bytes()), weights_only=True)
    assert state["image_shape"] == [8, 8] and "state_dict" in state
