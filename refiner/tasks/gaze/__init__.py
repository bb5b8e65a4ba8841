"""The gaze task (the paper's): 35 x 55 grayscale eyes labelled with gaze (pitch, yaw) in
radians, scored by mean angular error in degrees.

Synthetic eyes come from the procedural renderer (``renderer``) or a UnityEyes export; real
ones from the renderer's camera profile (sim-to-sim, when no real eyes are at hand), an
MPIIGaze root, or a folder of unlabelled eye images (``readers``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
from pydantic import Field

from refiner.config import Section
from refiner.errors import DatasetError
from refiner.tasks.gaze import readers, renderer
from refiner.tasks.gaze.angles import angular_error_deg
from refiner.tasks.heads import Metric, RegressionHead
from refiner.tasks.world import Images, World


class GazeParams(Section):
    synthetic: str = Field("render", description="'render' (the procedural eye renderer) or a UnityEyes export folder")
    real: str = Field("camera", description=(
        "'camera' (the renderer's camera profile: sim-to-sim), an MPIIGaze root, or a folder of "
        "unlabelled eye images (then set test)"))
    test: str | None = Field(None, description="null: split real by ingest.test_fraction; else 'camera' or an MPIIGaze root")
    num_real: int = Field(3000, gt=0, description="camera-profile eyes to render (pool + test)")
    max_head_pose_deg: float = Field(30.0, gt=0, description="UnityEyes: keep heads this close to frontal")


def load_eyes(source: str, num_images: int, seed: int, max_head_pose_deg: float = 30.0) -> Images:
    """One gaze data source: ``render`` / ``camera``: the renderer's profiles (``num_images``
    of them); an MPIIGaze root (labelled); a UnityEyes export (N.json + N.jpg, labelled); any
    other folder: unlabelled images. Prints what a reader skipped and why."""
    if source in ("render", "camera"):
        ids, pixels, gaze = renderer.render_eyes(num_images, seed, "synthetic" if source == "render" else "camera")
    else:
        path = Path(source)
        if not path.is_dir():
            raise DatasetError(f"{source}: not 'render', 'camera' or a folder of eye data")
        if (path / "Data" / "Normalized").is_dir():
            result, name = readers.read_mpiigaze(path), "MPIIGaze"
        elif any(path.glob("*.json")):
            result, name = readers.read_unityeyes(path, max_head_pose_deg), "UnityEyes"
        else:
            result, name = readers.read_image_folder(path), "image folder"
        print(result.summary(f"{name} {path}"))
        if not result.ids:
            raise DatasetError(f"{source}: no usable {name} images (see the skipped list above)")
        ids, pixels, gaze = result.arrays()
        pixels = pixels.astype(np.float32) / 255
    labels = None if gaze is None else {"gaze_pitch": gaze[:, 0], "gaze_yaw": gaze[:, 1]}
    return Images(ids, pixels, labels)


def gaze_network(outputs: int, image_shape: tuple[int, ...]):
    from refiner.tasks.gaze.network import GazeCNN  # torch only when an estimator is built
    return GazeCNN()  # 35 x 55 eyes, (pitch, yaw) out


ANGULAR_ERROR = Metric("error_deg", False, "{:.2f}°", "mean angular error on real test")


class Gaze(World):
    name = "gaze"
    Params = GazeParams
    labels = pa.schema([("gaze_pitch", pa.float32()), ("gaze_yaw", pa.float32())])

    def __init__(self, params):
        self.head = RegressionHead(self.labels, metric=ANGULAR_ERROR, errors=angular_error_deg, network=gaze_network)

    def synthesize(self, params):
        section = params.gaze
        eyes = load_eyes(section.synthetic, params.render.num_images, params.seed, section.max_head_pose_deg)
        if eyes.labels is None:
            raise DatasetError(f"{section.synthetic}: synthetic eyes need gaze labels (UnityEyes JSON)")
        return eyes

    def read_real(self, params):
        """Split one labelled source into pool and test, or, when ``gaze.test`` names a
        labelled source, use all of ``gaze.real`` (labelled or not) as the pool."""
        section, seed = params.gaze, params.seed
        real = load_eyes(section.real, section.num_real, seed, section.max_head_pose_deg)
        if section.test:
            pool, test = real, load_eyes(section.test, section.num_real, seed + 1, section.max_head_pose_deg)
        else:
            order = np.random.default_rng(seed).permutation(len(real.ids))
            n_test = int(round(len(real.ids) * params.ingest.test_fraction))
            pool, test = real.take(np.sort(order[n_test:])), real.take(np.sort(order[:n_test]))
        if test.labels is None:
            raise DatasetError(f"{section.test or section.real}: the real test split needs gaze labels: "
                             "set gaze.test to 'camera' or an MPIIGaze root")
        return pool, test

    def bad_labels(self, labels):
        pitch, yaw = np.abs(labels["gaze_pitch"]), np.abs(labels["gaze_yaw"])
        return {"gaze outside pitch ±90°, yaw ±180° (radians expected)": (pitch > np.pi / 2) | (yaw > np.pi)}


WORLD = Gaze
