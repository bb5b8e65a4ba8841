"""Four worlds for `simrefinery init` whose cameras the camera model was not built beside (issue 39):
each does something real sensors and real light do that the model has no parameter for.

    python -m experiments.camera_worlds gauge /tmp/gauge        # or: conveyor, orchard, signs
    simrefinery init --synthetic /tmp/gauge/synthetic/images --labels /tmp/gauge/synthetic/labels.csv \\
        --real /tmp/gauge/camera --test /tmp/gauge/camera_test/images --test-labels /tmp/gauge/camera_test/labels.csv --fast
    dvc repro

- ``gauge`` (regression only, grey 48x48, PNG): an analogue dial; labels its reading (0-1) and
  the needle's tip. The camera: light falling across the frame from one side (a ramp, not a
  radial falloff), defocus, photon noise *before* a 1/2.2 tone curve on a sensor with a black
  clip (so the noise neither follows the model's Poisson-Gaussian law in the output nor stays
  Gaussian in the dark), noise correlated between neighbours by demosaicing, no JPEG.
- ``conveyor`` (mixed, RGB 56x56, JPEG): nuts, washers and bolts on a belt; labels the part's
  class, its box and its centre. The camera: a belt texture of fibres along the belt (fine,
  directional, absent from the renders), motion blur along the belt (3 px), a cool cast,
  exposure that flickers from frame to frame (fluorescent light, +-15%), Poisson-Gaussian
  noise in the output, JPEG at quality 20-50.

- ``orchard`` (class and regression, RGB 40x40, JPEG; written after the camera model's last
  change, to judge it): a fruit on a tray; labels its kind (apple, plum, pear), its grade on a
  colour chart (1 green to 8 red: a regression read off colour) and its box. The camera: a
  night stall's sodium light (a strong warm cast, the white balance off by up to 6% a channel
  from frame to frame), flare that lifts the blacks, a brighter tone curve, lens blur, chromatic
  aberration (red and blue magnified 1% apart), high-ISO noise with blotchy colour noise,
  hot pixels, JPEG at quality 55-90.

- ``signs`` (class, point and regression, RGB 48x48, JPEG; written before the optics' tone
  statistics were tried, to judge them): a road sign against sky and hedge; labels its kind
  (a round, a triangular or a diamond sign), its centre and its size (px). The camera: a
  dashcam at dusk: a colour matrix that desaturates (a quarter of each channel is the grey), an
  S-shaped contrast curve, strong radial vignetting, lens blur, Poisson-Gaussian noise with
  row banding (a read-out offset per row), JPEG at quality 35-65.

``camera.json`` in each world's folder states its camera's noise as the learnt camera reports
it: the noise sigma at mid-grey in 8-bit levels before any JPEG (``noise_at_mid_grey``).
Sim-to-sim, like the shapes example: the "real" frames come from a second renderer.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy.ndimage import affine_transform, convolve, gaussian_filter, uniform_filter1d

SUPERSAMPLE = 4


def supersampled(size: int, colour, draw) -> Image.Image:
    """``draw(ImageDraw, scale)`` on a canvas SUPERSAMPLE times larger, then downsampled: antialiased."""
    mode = "L" if np.isscalar(colour) else "RGB"
    canvas = Image.new(mode, (size * SUPERSAMPLE,) * 2, colour if np.isscalar(colour) else tuple(colour))
    draw(ImageDraw.Draw(canvas), SUPERSAMPLE)
    return canvas.resize((size, size), Image.Resampling.BOX)


# ---- gauge ---------------------------------------------------------------------------------------
GAUGE_SIZE = 48
SWEEP = np.radians(270)  # the dial's scale: 0 at -135 degrees from straight up, 1 at +135


def gauge_scene(rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    centre = GAUGE_SIZE / 2 + rng.uniform(-3, 3, 2)
    radius, reading = rng.uniform(16, 20), rng.uniform(0, 1)
    face, backdrop, ink = rng.uniform(190, 235), rng.uniform(40, 90), rng.uniform(10, 40)
    angle = -SWEEP / 2 + reading * SWEEP  # from straight up, clockwise
    direction = np.array([np.sin(angle), -np.cos(angle)])
    tip = centre + 0.85 * radius * direction
    side = np.array([direction[1], -direction[0]])

    def draw(canvas, s):
        c = centre * s
        canvas.ellipse([*(c - radius * s), *(c + radius * s)], fill=int(face), outline=int(ink), width=s)
        for tick in np.linspace(-SWEEP / 2, SWEEP / 2, 11):
            d = np.array([np.sin(tick), -np.cos(tick)])
            canvas.line([tuple(c + 0.78 * radius * s * d), tuple(c + 0.95 * radius * s * d)], fill=int(ink), width=s)
        needle = [tip * s, (centre + 1.6 * side) * s, (centre - 0.2 * radius * direction) * s, (centre - 1.6 * side) * s]
        canvas.polygon([tuple(p) for p in needle], fill=int(ink))
        canvas.ellipse([*(c - 2.5 * s), *(c + 2.5 * s)], fill=int(ink))
    image = supersampled(GAUGE_SIZE, int(backdrop), draw)
    return np.asarray(image, np.float64) / 255, {"reading": round(reading, 5), "tip_keypoint": list(np.round(tip, 3))}


GAUGE_GAMMA = 1 / 2.2
GAUGE_SHOT, GAUGE_READ = 0.004, 0.006  # linear signal: variance 0.004 * signal + 0.006**2
GAUGE_BLUR = 1.1
GAUGE_GRAIN = np.array([[0.05, 0.1, 0.05], [0.1, 0.4, 0.1], [0.05, 0.1, 0.05]])  # demosaicing's neighbours
GAUGE_GRAIN = GAUGE_GRAIN / np.sqrt((GAUGE_GRAIN ** 2).sum())


def gauge_camera(scene: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The scene's values taken as linear light: lit unevenly, defocused, photon and read noise
    (correlated by demosaicing), black clip, then the 1/2.2 tone curve; 8-bit."""
    yy, xx = np.mgrid[:GAUGE_SIZE, :GAUGE_SIZE] / (GAUGE_SIZE - 1) - 0.5
    turn = rng.uniform(0, 2 * np.pi)
    light = 1 + 0.5 * (np.cos(turn) * xx + np.sin(turn) * yy) * rng.uniform(0.6, 1.0)  # +-25% across the frame
    signal = gaussian_filter(scene ** (1 / GAUGE_GAMMA) * light, GAUGE_BLUR * rng.uniform(0.9, 1.1), mode="nearest")
    noise = convolve(rng.standard_normal(signal.shape), GAUGE_GRAIN, mode="wrap")
    signal = signal + np.sqrt(GAUGE_SHOT * signal.clip(0) + GAUGE_READ ** 2) * noise
    return np.round(signal.clip(0, 1) ** GAUGE_GAMMA * 255).astype(np.uint8)


# ---- conveyor ------------------------------------------------------------------------------------
CONVEYOR_SIZE = 56
PARTS = ("nut", "washer", "bolt")


def conveyor_scene(rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    kind = int(rng.integers(len(PARTS)))
    size, turn = rng.uniform(8, 13), rng.uniform(0, 2 * np.pi)
    centre = rng.uniform(size + 3, CONVEYOR_SIZE - size - 3, 2)
    belt = np.array([70, 90, 75]) * rng.uniform(0.8, 1.2) + rng.uniform(-10, 10, 3)
    metal = np.array([170, 170, 165]) * rng.uniform(0.8, 1.2) + rng.uniform(-15, 15, 3)
    rotate = lambda points: centre + points @ np.array([[np.cos(turn), np.sin(turn)], [-np.sin(turn), np.cos(turn)]])  # noqa: E731
    if kind == 0:  # a hexagonal nut with its hole
        corners = np.arange(6) * np.pi / 3
        outline = rotate(size * np.c_[np.cos(corners), np.sin(corners)])
        holes = [0.45 * size]
    elif kind == 1:  # a washer: a ring
        outline, holes = None, [0.5 * size]
    else:  # a bolt: a shaft and a wider head
        shaft = np.array([[-size, -0.25 * size], [0.7 * size, -0.25 * size], [0.7 * size, 0.25 * size], [-size, 0.25 * size]])
        head = np.array([[0.55 * size, -0.55 * size], [size, -0.55 * size], [size, 0.55 * size], [0.55 * size, 0.55 * size]])
        outline, holes = np.r_[rotate(shaft), rotate(head)], []
    points = outline if outline is not None else centre + size * np.c_[np.cos(np.linspace(0, 2 * np.pi, 64)),
                                                                         np.sin(np.linspace(0, 2 * np.pi, 64))]

    def draw(canvas, s):
        fill = tuple(int(v) for v in metal.clip(0, 255))
        if kind == 1:
            canvas.ellipse([*((centre - size) * s), *((centre + size) * s)], fill=fill)
        elif kind == 0:
            canvas.polygon([tuple(p * s) for p in outline], fill=fill)
        else:
            canvas.polygon([tuple(p * s) for p in outline[:4]], fill=fill)
            canvas.polygon([tuple(p * s) for p in outline[4:]], fill=fill)
        for hole in holes:
            canvas.ellipse([*((centre - hole) * s), *((centre + hole) * s)], fill=tuple(int(v) for v in belt.clip(0, 255)))
    image = supersampled(CONVEYOR_SIZE, belt.clip(0, 255).astype(int), draw)
    box = [*np.round(points.min(0), 3), *np.round(points.max(0), 3)]
    return np.asarray(image, np.float64) / 255, {"part": kind, "box": box, "centre_keypoint": list(np.round(centre, 3))}


CONVEYOR_GAINS = np.array([0.82, 0.97, 1.18])  # a cool cast
CONVEYOR_SHOT, CONVEYOR_READ = 0.0015, 0.008  # output signal: variance 0.0015 * signal + 0.008**2
CONVEYOR_JPEG = (20, 50)


def conveyor_camera(scene: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A fibrous belt, motion blur along it, a cool cast, flickering exposure, Poisson-Gaussian
    noise; the JPEG is applied on saving (``CONVEYOR_JPEG``)."""
    belt_mask = (np.abs(scene - scene[0, 0]).sum(-1, keepdims=True) < 0.02)  # where the belt shows
    fibres = uniform_filter1d(rng.standard_normal(scene.shape[:2]), 7, axis=1)[..., None] * 0.08
    image = scene + belt_mask * fibres
    image = uniform_filter1d(image, 3, axis=1, mode="nearest")  # 3 px of motion along the belt
    image = image * CONVEYOR_GAINS * rng.uniform(0.85, 1.15)
    image = image + np.sqrt(CONVEYOR_SHOT * image.clip(0, 1) + CONVEYOR_READ ** 2) * rng.standard_normal(image.shape)
    return Image.fromarray(np.round(image.clip(0, 1) * 255).astype(np.uint8))


# ---- orchard -------------------------------------------------------------------------------------
ORCHARD_SIZE = 40
FRUITS = ("apple", "plum", "pear")
GRADE_COLOURS = np.array([[90, 160, 50], [200, 190, 40], [200, 40, 30]])  # grade 1, 4.5, 8


def grade_colour(grade: float) -> np.ndarray:
    share = (grade - 1) / 7 * 2  # 0..2 along the chart: green, yellow, red
    low = min(int(share), 1)
    return GRADE_COLOURS[low] + (share - low) * (GRADE_COLOURS[low + 1] - GRADE_COLOURS[low])


def orchard_scene(rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    kind, grade = int(rng.integers(len(FRUITS))), rng.uniform(1, 8)
    size = rng.uniform(7, 11)
    centre = rng.uniform(size + 3, ORCHARD_SIZE - size - 3, 2)
    tray = np.array([150, 160, 175]) * rng.uniform(0.85, 1.15)
    colour = (grade_colour(grade) * rng.uniform(0.9, 1.1)).clip(0, 255)
    if kind == 0:
        blobs = [(centre, size, size)]
    elif kind == 1:
        blobs = [(centre, 0.75 * size, size)]
    else:  # a pear: a small blob above a large one
        blobs = [(centre + [0, 0.3 * size], 0.75 * size, 0.7 * size), (centre - [0, 0.45 * size], 0.45 * size, 0.45 * size)]
    lows = np.min([c - [rx, ry] for c, rx, ry in blobs], 0)
    highs = np.max([c + [rx, ry] for c, rx, ry in blobs], 0)

    def draw(canvas, s):
        for c, rx, ry in blobs:
            canvas.ellipse([(c[0] - rx) * s, (c[1] - ry) * s, (c[0] + rx) * s, (c[1] + ry) * s], fill=tuple(int(v) for v in colour))
        top = np.array([centre[0], lows[1]])
        canvas.line([tuple(top * s), tuple((top + [1.5, -2.5]) * s)], fill=(70, 45, 20), width=s)  # the stem
        shine = centre - 0.35 * size
        canvas.ellipse([*((shine - 1.2) * s), *((shine + 1.2) * s)], fill=tuple(int(v) for v in (colour + 255) / 2))
    image = supersampled(ORCHARD_SIZE, tray.clip(0, 255).astype(int), draw)
    box = [*np.round(lows, 3), *np.round(highs, 3)]
    return np.asarray(image, np.float64) / 255, {"fruit": kind, "grade": round(grade, 4), "box": box}


ORCHARD_GAINS = np.array([1.2, 0.98, 0.7])  # sodium light
ORCHARD_SHOT, ORCHARD_READ = 0.0025, 0.012  # output signal: variance 0.0025 * signal + 0.012**2, per channel
ORCHARD_BLOTCH = 3 / 255  # the blotchy colour noise's sigma
ORCHARD_JPEG = (55, 90)


def orchard_camera(scene: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Blur, chromatic aberration, sodium light with a white balance off frame to frame, flare,
    a brighter tone curve, high-ISO noise (white and blotchy colour), hot pixels; JPEG on saving."""
    image = gaussian_filter(scene, (0.7, 0.7, 0), mode="nearest")
    for channel, scale in ((0, 1.01), (2, 0.99)):  # red and blue magnified apart about the centre
        image[..., channel] = affine_transform(image[..., channel], np.eye(2) / scale,
                                               offset=(ORCHARD_SIZE - 1) / 2 * (1 - 1 / scale), mode="nearest")
    image = image * ORCHARD_GAINS * rng.uniform(0.94, 1.06, 3)
    image = 0.05 + 0.95 * image.clip(0, 1) ** 0.85
    image = image + np.sqrt(ORCHARD_SHOT * image.clip(0, 1) + ORCHARD_READ ** 2) * rng.standard_normal(image.shape)
    blotches = gaussian_filter(rng.standard_normal(image.shape), (1.5, 1.5, 0), mode="wrap")
    image = image + blotches / blotches.std() * ORCHARD_BLOTCH
    hot = rng.random(image.shape[:2]) < 0.0015
    image[hot] = rng.uniform(0.7, 1, (hot.sum(), 3))
    return Image.fromarray(np.round(image.clip(0, 1) * 255).astype(np.uint8))


# ---- signs ---------------------------------------------------------------------------------------
SIGNS_SIZE = 48
SIGNS = ("round", "triangle", "diamond")


def signs_scene(rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    kind, size = int(rng.integers(len(SIGNS))), rng.uniform(7, 13)
    centre = rng.uniform(size + 2, SIGNS_SIZE - size - 2, 2)
    sky = np.array([120, 150, 200]) * rng.uniform(0.8, 1.15)
    hedge = np.array([50, 95, 45]) * rng.uniform(0.8, 1.2)
    horizon = rng.uniform(0.55, 0.8) * SIGNS_SIZE
    red, white, yellow = np.array([200, 30, 35]), np.array([235, 235, 230]), np.array([235, 190, 30])

    def draw(canvas, s):
        canvas.rectangle([0, horizon * s, SIGNS_SIZE * s, SIGNS_SIZE * s], fill=tuple(int(v) for v in hedge.clip(0, 255)))
        c = centre * s
        canvas.line([(c[0], c[1]), (c[0], SIGNS_SIZE * s)], fill=(90, 90, 95), width=2 * s)  # the post
        if kind == 0:
            canvas.ellipse([*(c - size * s), *(c + size * s)], fill=tuple(int(v) for v in red))
            canvas.ellipse([*(c - 0.7 * size * s), *(c + 0.7 * size * s)], fill=tuple(int(v) for v in white))
        else:
            turns = np.radians([-90, 30, 150]) if kind == 1 else np.radians([-90, 0, 90, 180])
            outer = [tuple(c + size * s * np.array([np.cos(t), np.sin(t)])) for t in turns]
            inner = [tuple(c + 0.6 * size * s * np.array([np.cos(t), np.sin(t)])) for t in turns]
            canvas.polygon(outer, fill=tuple(int(v) for v in (red if kind == 1 else yellow)))
            canvas.polygon(inner, fill=tuple(int(v) for v in (white if kind == 1 else yellow * 0.8)))
    image = supersampled(SIGNS_SIZE, sky.clip(0, 255).astype(int), draw)
    return np.asarray(image, np.float64) / 255, {"sign": kind, "centre_keypoint": list(np.round(centre, 3)),
                                                  "size": round(size, 4)}


SIGNS_MIX = 0.75 * np.eye(3) + 0.25 / 3  # a quarter of each channel is the grey: desaturated
SIGNS_SHOT, SIGNS_READ = 0.002, 0.01
SIGNS_BANDING = 1.5 / 255  # the sigma of each row's offset
SIGNS_JPEG = (35, 65)


def signs_camera(scene: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Blur, the desaturating colour matrix, an S-curve, vignetting, noise and row banding; JPEG on saving."""
    image = gaussian_filter(scene, (0.9, 0.9, 0), mode="nearest") @ SIGNS_MIX.T
    image = image.clip(0, 1)
    image = 0.5 * image + 0.5 * image * image * (3 - 2 * image)  # half way to smoothstep: more contrast
    yy, xx = np.mgrid[:SIGNS_SIZE, :SIGNS_SIZE] / (SIGNS_SIZE - 1) - 0.5
    image = image * (1 - 0.7 * (xx ** 2 + yy ** 2))[..., None]  # 35% darker corners
    image = image + np.sqrt(SIGNS_SHOT * image.clip(0, 1) + SIGNS_READ ** 2) * rng.standard_normal(image.shape)
    image = image + SIGNS_BANDING * rng.standard_normal((SIGNS_SIZE, 1, 1))
    return Image.fromarray(np.round(image.clip(0, 1) * 255).astype(np.uint8))


# ---- all -----------------------------------------------------------------------------------------
def noise_at_mid_grey(name: str) -> float:
    """The camera's noise sigma in 8-bit levels where its frames come out mid-grey, before JPEG,
    with neither texture nor flicker: what the learnt camera's ``noise_sigma_levels`` is held
    against. The gauge's is through its tone curve (drawn: 200,000 samples)."""
    if name == "conveyor":
        return float(np.sqrt(CONVEYOR_SHOT * 0.5 + CONVEYOR_READ ** 2) * 255)
    if name == "signs":  # the white noise (the row banding apart)
        return float(np.sqrt(SIGNS_SHOT * 0.5 + SIGNS_READ ** 2) * 255)
    if name == "orchard":  # the white and the blotchy noise together
        return float(np.sqrt(ORCHARD_SHOT * 0.5 + ORCHARD_READ ** 2 + ORCHARD_BLOTCH ** 2) * 255)
    linear = 0.5 ** (1 / GAUGE_GAMMA)
    draws = linear + np.sqrt(GAUGE_SHOT * linear + GAUGE_READ ** 2) * np.random.default_rng(0).standard_normal(200_000)
    return float((draws.clip(0, 1) ** GAUGE_GAMMA * 255).std())


WORLDS = {"gauge": (gauge_scene, gauge_camera, "png"), "conveyor": (conveyor_scene, conveyor_camera, "jpg"),
          "orchard": (orchard_scene, orchard_camera, "jpg"), "signs": (signs_scene, signs_camera, "jpg")}
QUALITIES = {"conveyor": CONVEYOR_JPEG, "orchard": ORCHARD_JPEG, "signs": SIGNS_JPEG}


def write_labels(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()} for row in rows)


def make_world(name: str, out: Path, num_synthetic: int = 3000, num_camera: int = 1500, num_test: int = 600,
               seed: int = 0) -> None:
    scene, camera, suffix = WORLDS[name]
    rng = np.random.default_rng(seed)
    out = Path(out)
    for folder in ("synthetic/images", "camera", "camera_test/images"):
        (out / folder).mkdir(parents=True, exist_ok=True)

    def save(pixels, path: Path):
        image = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
        if suffix == "jpg":
            image.save(path, quality=int(rng.integers(*QUALITIES[name])))
        else:
            image.save(path)
    rows = []
    for index in range(num_synthetic):
        pixels, labels = scene(rng)
        Image.fromarray(np.round(pixels * 255).astype(np.uint8)).save(out / "synthetic/images" / f"{index:06d}.png")
        rows.append({"file": f"{index:06d}.png", **labels})
    write_labels(out / "synthetic/labels.csv", rows)
    for index in range(num_camera):
        save(camera(scene(rng)[0], rng), out / "camera" / f"{index:06d}.{suffix}")
    rows = []
    for index in range(num_test):
        pixels, labels = scene(rng)
        save(camera(pixels, rng), out / "camera_test/images" / f"{index:06d}.{suffix}")
        rows.append({"file": f"{index:06d}.{suffix}", **labels})
    write_labels(out / "camera_test/labels.csv", rows)
    noise = noise_at_mid_grey(name)
    (out / "camera.json").write_text(json.dumps({"world": name, "noise_sigma_levels": round(noise, 2)}) + "\n")
    print(f"wrote {out}: {num_synthetic} renders, {num_camera} camera frames, {num_test} labelled camera frames; "
          f"the camera's noise at mid-grey: {noise:.1f} levels")


if __name__ == "__main__":
    make_world(sys.argv[1], Path(sys.argv[2]))
