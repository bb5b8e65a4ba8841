"""The proof that the task registry is real: a third task, written here in a few lines,
runs through the real `dvc repro` with one new file and one new params section."""

import json

import numpy as np
import pytest

from refiner import dataset
from tests.conftest import ROOT, TINY, make_project, sh

TOY_TASK = '''
"""A toy world: one bright 2x2 square, on the left half (0) or the right half (1)."""
import numpy as np
from pydantic import Field

from refiner.config import Section
from refiner.tasks.base import ClassificationTask, Images


class ToyParams(Section):
    size: int = Field(8, ge=4)
    camera_noise: float = 0.2


def squares(n, seed, size, noise):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    pixels = np.zeros((n, size, size), np.float32)
    for i, side in enumerate(labels):
        row, col = rng.integers(0, size - 1), rng.integers(0, size // 2 - 1) + side * (size // 2)
        pixels[i, row:row + 2, col:col + 2] = 1.0
    pixels = np.clip(pixels + rng.normal(0, noise, pixels.shape), 0, 1).astype(np.float32)
    return Images(np.array([f"toy-{seed}-{i}" for i in range(n)], dtype=object), pixels, {"label": labels})


class Toy(ClassificationTask):
    name = "toy"
    num_classes = 2
    Params = ToyParams

    def synthesize(self, params):
        return squares(params.render.num_images, params.seed, params.toy.size, 0.0)

    def read_real(self, params):  # a noisy "camera" version of the same world
        real = squares(200, params.seed + 1, params.toy.size, params.toy.camera_noise)
        return real.take(np.arange(100)), real.take(np.arange(100, 200))


TASK = Toy()
'''


@pytest.mark.slow
def test_a_task_registered_in_one_file_runs_through_dvc_repro(tmp_path):
    small = {"train_estimator": {**TINY["train_estimator"], "num_seeds": 1, "self_training_rounds": 0}}
    env = make_project(tmp_path, {**TINY, **small, "task": "toy", "toy": {"size": 10}},
                       extra_files={"refiner/tasks/toy.py": TOY_TASK})
    files = sh("git", "ls-files", cwd=tmp_path, env=env).split()
    edited = [name for name in files if not (ROOT / name).is_file() or (ROOT / name).read_bytes() != (tmp_path / name).read_bytes()]
    assert edited == ["params.yaml", "refiner/tasks/toy.py"]  # the whole edit: one file and one params section
    sh("dvc", "repro", cwd=tmp_path, env=env)
    synthetic = dataset.validate(tmp_path / "data/synthetic")
    assert synthetic.manifest["params"]["toy"] == {"size": 10, "camera_noise": 0.2}
    assert synthetic.manifest["image_shape"] == [10, 10] and synthetic.label_columns == ["label"]
    refined = dataset.validate(tmp_path / "data/refined")
    assert np.array_equal(refined.load()["label"], synthetic.load()["label"])
    report = json.loads((tmp_path / "metrics/eval.json").read_text())
    assert set(report["oracle"]["per_class_accuracy"]) == {"0", "1"}
    assert report["oracle"]["accuracy"] > 0.8  # left or right: easy with real labels
    assert "| refined |" in (tmp_path / "metrics/eval.md").read_text()
    assert (tmp_path / "plots/evaluate/confusion-refined.png").is_file()
