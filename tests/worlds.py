"""The worlds the end-to-end test reproduces with the real `dvc repro`: each one's tiny params,
how a user would set it up, and what its run must show. ``toy`` is a world written here in
a few lines: the proof that a new world is one file and one params section."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers import TINY, joining, make_project, sh

TOY_WORLD = '''
"""A toy world: one bright 2x2 square, on the left half (0) or the right half (1)."""
import numpy as np
import pyarrow as pa
from pydantic import Field

from refiner.config import Section
from refiner.tasks.heads import ClassificationHead
from refiner.tasks.world import Images, World


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


class Toy(World):
    name = "toy"
    Params = ToyParams
    labels = pa.schema([("label", pa.int64())])

    def __init__(self, params):
        self.head = ClassificationHead(2)

    def synthesize(self, params):
        return squares(params.render.num_images, params.seed, params.toy.size, 0.0)

    def read_real(self, params):  # a noisy "camera" version of the same world
        real = squares(200, params.seed + 1, params.toy.size, params.toy.camera_noise)
        return real.take(np.arange(100)), real.take(np.arange(100, 200))


WORLD = Toy
'''

ONE_SEED = {**TINY["train_estimator"], "num_seeds": 1}  # the digits run tests the spread over seeds


@dataclass(frozen=True)
class World:
    params: dict                        # over the committed params.yaml
    image_shape: list[int]
    metric: str
    plot: str                           # the head's figure under plots/evaluate/
    extra_files: dict = field(default_factory=dict)
    user_commands: tuple = ()           # what a user runs before `dvc repro`
    num_seeds: int = 1
    # True: its refine starts a local Ray, as a user's `dvc repro` does; else it joins the test
    # worker's Ray (RAY_ADDRESS, as a stage joins a cluster): a Ray start-up fewer (about 10 CPU-s)
    starts_ray: bool = False


WORLDS = {
    "digits": World(TINY, [8, 8], "accuracy", "confusion-refined.png", num_seeds=2, starts_ray=True),
    "gaze": World({**TINY, "task": "gaze", "image_encoding": "png",  # the digits run holds raw images
                   "render": {"num_images": 96}, "gaze": {"num_real": 80},
                   # no classes: the paper's discriminator and lambda, as the gaze profile and `simrefinery init` set
                   "train_refiner": {**TINY["train_refiner"], "conditional": False, "lambda": 10.0},
                   "train_estimator": {**ONE_SEED, "adaptation": "mean_teacher", "teacher_steps": 40, "steps": 80,
                                       "eval_every": 40},  # no classes: the teacher's outputs
                   "evaluate": {**TINY["evaluate"], "oracle": False}},  # the digits run tests the oracle
                  [35, 55], "error_deg", "errors.png"),
    "toy": World({**TINY, "task": "toy", "toy": {"size": 10},
                  "train_estimator": {**ONE_SEED, "adaptation": "none"}},
                 [10, 10], "accuracy", "confusion-refined.png", extra_files={"refiner/tasks/toy.py": TOY_WORLD}),
    # a user's own folders, without Python: the example world, `simrefinery init`, `dvc repro`
    "images": World({**TINY, "train_estimator": {**ONE_SEED, "steps": 60, "eval_every": 30}},
                    [64, 64, 3], "mae", "errors.png", user_commands=(
                        ("simrefinery", "example", "world", "--num-synthetic", "96", "--num-camera", "64",
                         "--num-test", "32"),
                        ("simrefinery", "init", "--synthetic", "world/synthetic/images", "--labels",
                         "world/synthetic/labels.csv", "--real", "world/camera", "--test", "world/camera_test/images",
                         "--test-labels", "world/camera_test/labels.csv"))),
}


@dataclass
class Project:
    """A world's tiny project after its first `dvc repro`."""
    name: str
    repo: Path
    env: dict
    output: str                 # what the user commands and the repro printed
    digests: dict[str, str]     # its datasets' digests right after the repro


def reproduced(name: str, repo: Path, ray=None) -> Project:
    """``ray``: the tests' local Ray, which its refine joins (a world that does not start its own)."""
    from refiner import data
    world = WORLDS[name]
    env = {**make_project(repo, world.params, world.extra_files), **(joining(ray) if ray else {})}
    output = "".join(sh(*command, cwd=repo, env=env) for command in world.user_commands)
    output += sh("dvc", "repro", cwd=repo, env=env)
    digests = {name: data.open_dataset(repo / "data" / name).digest
               for name in ("synthetic", "real/unlabeled", "real/test", "refined")}
    return Project(name, repo, env, output, digests)
