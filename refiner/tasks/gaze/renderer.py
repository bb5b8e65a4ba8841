"""A procedural eye renderer for the gaze task: 35 x 55 grayscale eyes with a known gaze.

The ``synthetic`` profile is the simulator: clean shading, even light. The ``camera``
profile stands in for a real camera when no real eye data is at hand: the same eyes seen
through optics blur, sensor noise, uneven illumination, gamma, JPEG and other skin and iris
statistics. A default gaze run refines ``synthetic`` towards ``camera``: it is sim-to-sim.

Geometry (in output pixels): an eyeball of radius ``ball`` behind an almond-shaped eyelid
opening; the iris centre moves with gaze as on a sphere, and the iris is foreshortened by the
cosine of the gaze angles; the upper lid rises when looking up and drops when looking down.
Gaze follows ``angles``: yaw > 0 looks towards the image's left, pitch > 0 up.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from refiner.tasks.gaze.angles import EYE_SIZE

SUPERSAMPLE = 3  # render at 3x and average down: smooth edges without an anti-aliasing library


@dataclass(frozen=True)
class EyeProfile:
    """Appearance statistics of one image source (ranges are uniform)."""
    skin: tuple[float, float] = (0.55, 0.8)
    sclera: tuple[float, float] = (0.8, 0.95)
    iris: tuple[float, float] = (0.2, 0.5)
    lash_darkness: tuple[float, float] = (0.3, 0.6)
    light_gradient: tuple[float, float] = (0.0, 0.1)   # brightness change across the image
    gamma: tuple[float, float] = (1.0, 1.0)
    blur_sigma: tuple[float, float] = (0.0, 0.0)       # output pixels
    noise_sigma: tuple[float, float] = (0.0, 0.0)
    jpeg_quality: tuple[int, int] | None = None


PROFILES = {
    "synthetic": EyeProfile(),
    "camera": EyeProfile(skin=(0.35, 0.7), sclera=(0.6, 0.85), iris=(0.1, 0.4), lash_darkness=(0.6, 0.9),
                         light_gradient=(0.1, 0.4), gamma=(0.7, 1.4), blur_sigma=(0.5, 1.2),
                         noise_sigma=(0.02, 0.05), jpeg_quality=(30, 75)),
}
GAZE_RANGE = (np.radians(20.0), np.radians(30.0))  # |pitch|, |yaw| at most


def _uniform(rng: np.random.Generator, bounds) -> float:
    return float(rng.uniform(*bounds))


def _smooth_noise(rng: np.random.Generator, shape, cells: int) -> np.ndarray:
    coarse = rng.normal(0, 1, size=(cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse).resize(shape[::-1], Image.Resampling.BICUBIC))


def render_eye(pitch: float, yaw: float, rng: np.random.Generator, profile: EyeProfile) -> np.ndarray:
    """One eye as a float32 (35, 55) array in [0, 1]."""
    height, width = EYE_SIZE[0] * SUPERSAMPLE, EYE_SIZE[1] * SUPERSAMPLE
    s = SUPERSAMPLE
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32) / s  # output-pixel units
    cx, cy = EYE_SIZE[1] / 2 + rng.uniform(-3, 3), EYE_SIZE[0] / 2 + rng.uniform(-2, 2)
    half_width, half_height = rng.uniform(17, 22), rng.uniform(6, 8.5)
    ball, iris_radius = rng.uniform(11, 13), rng.uniform(5, 6)

    # eyelid opening: upper and lower lid arcs between the eye corners
    u = np.clip((cols - cx) / half_width, -1, 1)
    inside_x = np.abs(cols - cx) < half_width
    upper = cy - half_height * (1 + 0.9 * pitch) * (1 - u ** 2)
    lower = cy + 0.7 * half_height * (1 - 0.4 * pitch) * (1 - u ** 2)
    opening = inside_x & (rows > upper) & (rows < lower)

    skin = _uniform(rng, profile.skin) + 0.04 * _smooth_noise(rng, (height, width), 6)
    image = skin.copy()
    image -= 0.12 * np.exp(-((rows - upper + 2.5) ** 2) / 6) * inside_x  # lid crease shadow
    sclera = _uniform(rng, profile.sclera) - 0.15 * u ** 4  # darker towards the corners
    image = np.where(opening, sclera, image)

    # iris and pupil on the sphere, foreshortened
    ix, iy = cx - ball * np.sin(yaw) * np.cos(pitch), cy - ball * np.sin(pitch)
    ax, ay = iris_radius * np.cos(yaw), iris_radius * np.cos(pitch)
    radius = np.sqrt(((cols - ix) / ax) ** 2 + ((rows - iy) / ay) ** 2)
    angle = np.arctan2(rows - iy, cols - ix)
    spokes = 0.06 * np.sin(angle * rng.integers(9, 17) + rng.uniform(0, 6.3))
    iris = _uniform(rng, profile.iris) + spokes - 0.08 * radius  # darker limbal ring outwards
    image = np.where(opening & (radius < 1), iris, image)
    pupil = rng.uniform(0.3, 0.45)
    image = np.where(opening & (radius < pupil), 0.05, image)
    glint = np.hypot(cols - ix - 1.5, rows - iy + 1.5) < 0.8
    image = np.where(opening & glint, 1.0, image)

    # eyelashes along the upper lid, then light
    lash = _uniform(rng, profile.lash_darkness)
    image = np.where(inside_x & (np.abs(rows - upper) < 0.9), image * (1 - lash), image)
    direction = rng.uniform(0, 2 * np.pi)
    ramp = ((cols - EYE_SIZE[1] / 2) * np.cos(direction) + (rows - EYE_SIZE[0] / 2) * np.sin(direction)) / EYE_SIZE[1]
    image = image * (1 + _uniform(rng, profile.light_gradient) * 2 * ramp)

    image = image.reshape(EYE_SIZE[0], s, EYE_SIZE[1], s).mean(axis=(1, 3))
    return _camera(np.clip(image, 0, 1), rng, profile)


def _camera(image: np.ndarray, rng: np.random.Generator, profile: EyeProfile) -> np.ndarray:
    image = image ** _uniform(rng, profile.gamma)
    sigma = _uniform(rng, profile.blur_sigma)
    if sigma > 0:
        from scipy.ndimage import gaussian_filter
        image = gaussian_filter(image, sigma, mode="nearest")
    image = image + rng.normal(0, _uniform(rng, profile.noise_sigma) or 0.0, image.shape)
    image = np.clip(image, 0, 1)
    if profile.jpeg_quality is not None:
        buffer = io.BytesIO()
        Image.fromarray(np.round(image * 255).astype(np.uint8)).save(
            buffer, "JPEG", quality=int(rng.integers(profile.jpeg_quality[0], profile.jpeg_quality[1] + 1)))
        image = np.asarray(Image.open(buffer), np.float32) / 255
    return image.astype(np.float32)


def render_eyes(num_images: int, seed: int, profile: str = "synthetic", progress: bool = True):
    """ids, (N, 35, 55) float32 images in [0, 1], (N, 2) float32 gaze (pitch, yaw) in radians.
    Each image is seeded by (seed, profile, index), so any slice is reproducible."""
    from refiner.progress import bar
    spec = PROFILES[profile]
    profile_key = list(PROFILES).index(profile)
    images = np.zeros((num_images, *EYE_SIZE), np.float32)
    gaze = np.zeros((num_images, 2), np.float32)
    for index in bar(range(num_images), desc=f"render eyes ({profile})", enabled=progress):
        rng = np.random.default_rng([seed, profile_key, index])
        pitch, yaw = rng.uniform(-1, 1, size=2) * GAZE_RANGE
        images[index] = render_eye(pitch, yaw, rng, spec)
        gaze[index] = pitch, yaw
    ids = np.array([f"eye-{profile}-{seed}-{index:07d}" for index in range(num_images)], dtype=object)
    return ids, images, gaze
