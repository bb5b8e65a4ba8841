"""A world to try the images task on, generated (nothing downloaded): coloured shapes on a
coloured background, 64 x 64 RGB, labelled with the shape's class, two keypoints (its centre
and its topmost point), its bounding box and a mask.

- ``synthetic/images/``: rendered clean (flat colours, sharp antialiased edges), labelled
  by ``synthetic/labels.csv`` (file, shape, keypoints, box, mask: ``masks/<file>``);
- ``camera/``: the same world as a cheap camera sees it (lens blur, sensor noise, a warm
  colour cast, vignetting, JPEG: ``CAMERA``), unlabelled: the refiner's real images;
- ``camera_test/images/``: more camera images, labelled by ``camera_test/labels.csv``
  (file, shape, keypoints, box):
  the labelled real test set.

This is sim-to-sim: the "real" images come from a second renderer, so it shows the
pipeline working, not what a refiner buys on a real camera.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZE = 64
SUPERSAMPLE = 4
SHAPES = ("circle", "square", "triangle")


def shape_outline(kind: int, centre: np.ndarray, radius: float, angle: float) -> np.ndarray:
    """The shape's polygon (a circle as 48 points), in pixels."""
    corners = {0: 48, 1: 4, 2: 3}[kind]
    turns = angle + np.arange(corners) * 2 * np.pi / corners
    return centre + radius * np.c_[np.cos(turns), np.sin(turns)]


def render_scene(rng: np.random.Generator) -> tuple[Image.Image, Image.Image, dict]:
    """(image, mask, labels) of one clean scene."""
    kind = int(rng.integers(len(SHAPES)))
    radius = rng.uniform(9, 16)
    centre = rng.uniform(radius + 2, SIZE - radius - 2, 2)
    outline = shape_outline(kind, centre, radius, rng.uniform(0, 2 * np.pi))
    background, colour = rng.integers(30, 226, 3), rng.integers(0, 256, 3)
    while np.abs(colour - background).sum() < 180:  # the shape stands out from its background
        colour = rng.integers(0, 256, 3)
    big = SIZE * SUPERSAMPLE
    image = Image.new("RGB", (big, big), tuple(int(c) for c in background))
    mask = Image.new("L", (big, big), 0)
    polygon = [tuple(p) for p in outline * SUPERSAMPLE]
    ImageDraw.Draw(image).polygon(polygon, fill=tuple(int(c) for c in colour))
    ImageDraw.Draw(mask).polygon(polygon, fill=255)
    top = outline[np.argmin(outline[:, 1])]
    labels = {"shape": kind, "keypoints": [*np.round(centre, 3), *np.round(top, 3)],
              "box": [*np.round(outline.min(0), 3), *np.round(outline.max(0), 3)]}
    return (image.resize((SIZE, SIZE), Image.Resampling.LANCZOS),
            mask.resize((SIZE, SIZE), Image.Resampling.NEAREST), labels)


# The example camera's settings, in the terms of refiner/simgan/camera.py's learned one (so a
# test can hold the learned camera against them); each image jitters around them a little.
CAMERA = {"blur_sigma_px": 0.95, "gain_r": 1.10, "gain_g": 1.00, "gain_b": 0.85, "vignetting": 0.45,
          "noise_sigma_levels": 7.0}
JPEG_QUALITY = (35, 80)


def camera(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """What a cheap camera makes of a scene: lens blur, a warm colour cast, vignetting and
    sensor noise (JPEG on saving), each image's settings within a few percent of ``CAMERA``."""
    jitter = lambda: rng.uniform(0.9, 1.1)  # noqa: E731
    image = image.filter(ImageFilter.GaussianBlur(CAMERA["blur_sigma_px"] * jitter()))
    gains = np.array([CAMERA["gain_r"], CAMERA["gain_g"], CAMERA["gain_b"]]) * rng.uniform(0.95, 1.05, 3)
    pixels = np.asarray(image, np.float32) * gains
    yy, xx = np.mgrid[:SIZE, :SIZE] / (SIZE - 1) - 0.5
    pixels *= (1 - CAMERA["vignetting"] * jitter() * (xx ** 2 + yy ** 2) * 2)[..., None]
    pixels += rng.normal(0, CAMERA["noise_sigma_levels"] * jitter(), pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _write_labels(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()})


def make_example(out: Path, num_synthetic: int = 2000, num_camera: int = 1000, num_test: int = 500,
                 seed: int = 0) -> dict[str, Path]:
    """Writes the three folders under ``out``; returns their paths (and the labels files')."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    paths = {"synthetic": out / "synthetic", "real": out / "camera", "test": out / "camera_test"}
    for path in paths.values():
        path.mkdir(parents=True, exist_ok=True)
    for folder in (paths["synthetic"] / "images", paths["synthetic"] / "masks", paths["test"] / "images"):
        folder.mkdir(exist_ok=True)
    rows = []
    for index in range(num_synthetic):
        image, mask, labels = render_scene(rng)
        name = f"{index:06d}.png"
        rows.append({"file": name, **labels, "mask": f"masks/{name}"})
        image.save(paths["synthetic"] / "images" / name)
        mask.save(paths["synthetic"] / "masks" / name)
    _write_labels(paths["synthetic"] / "labels.csv", rows)
    for index in range(num_camera):
        image, _, _ = render_scene(rng)
        camera(image, rng).save(paths["real"] / f"{index:06d}.jpg", quality=int(rng.integers(*JPEG_QUALITY)))
    test_rows = []
    for index in range(num_test):
        image, _, labels = render_scene(rng)
        name = f"{index:06d}.jpg"
        camera(image, rng).save(paths["test"] / "images" / name, quality=int(rng.integers(*JPEG_QUALITY)))
        test_rows.append({"file": name, **labels})
    _write_labels(paths["test"] / "labels.csv", test_rows)
    return {"synthetic": paths["synthetic"] / "images", "labels": paths["synthetic"] / "labels.csv",
            "real": paths["real"], "test": paths["test"] / "images", "test_labels": paths["test"] / "labels.csv"}
