"""Realism taken apart on the shapes example: renders, renders through the example's true
camera (with and without JPEG), and a trained camera refiner's two parts applied separately.

    python -m experiments.realism_parts PROJECT   # a project that ran `simrefinery init --fast` + dvc repro

PROJECT's data/synthetic, data/real/unlabeled and models/refiner are read; the true-camera rows
draw fresh scenes from the example's generator. Figures: experiments/README.md (session 30).
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from refiner import data
from refiner.evaluation.label_free import realism
from refiner.simgan.trainer import from_model, load_refiner, to_model
from refiner.tasks.images.example import JPEG_QUALITY, camera, render_scene

N = 1000


def as01(image: Image.Image) -> np.ndarray:
    return np.asarray(image, np.float32) / 255


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def true_camera_rows(rng: np.random.Generator) -> dict[str, float]:
    """Fresh renders and camera frames from the example's generator, scored against each other."""
    frames = np.stack([as01(jpeg(camera(render_scene(rng)[0], rng), int(rng.integers(*JPEG_QUALITY))))
                       for _ in range(N)])
    renders, plain, compressed = [], [], []
    for _ in range(N):
        scene = render_scene(rng)[0]
        shot = camera(scene, rng)
        renders.append(as01(scene))
        plain.append(as01(shot))
        compressed.append(as01(jpeg(shot, int(rng.integers(*JPEG_QUALITY)))))
    return {"renders (fresh)": realism(np.stack(renders), frames, 0),
            "true camera, no JPEG": realism(np.stack(plain), frames, 0),
            "true camera + JPEG": realism(np.stack(compressed), frames, 0)}


def refiner_rows(project: Path) -> dict[str, float]:
    """The project's refiner on its first N renders: whole, its residual's scenes, its camera alone."""
    model = load_refiner(project / "models/refiner/refiner.pt").eval()
    renders = data.open_dataset(project / "data/synthetic").load()["image"][:N]
    frames = data.open_dataset(project / "data/real/unlabeled").load()["image"]
    with torch.no_grad():
        x = to_model(renders)
        scene, refined = model.parts(x)
        camera_only = model.camera(x)
    quantised = lambda batch: np.round(from_model(batch) * 255) / 255  # noqa: E731 (as the refine stage writes)
    return {"renders": realism(renders, frames, 0), "refined (camera + residual)": realism(quantised(refined), frames, 0),
            "the residual's scenes alone": realism(quantised(scene), frames, 0),
            "the learnt camera alone on the renders": realism(quantised(camera_only), frames, 0)}


def main(project: Path) -> None:
    rows = {**true_camera_rows(np.random.default_rng(5)), **refiner_rows(project)}
    print("| images | realism |\n|---|---|")
    for name, value in rows.items():
        print(f"| {name} | {value:.3f} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
