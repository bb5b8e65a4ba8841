"""The camera's sensor: its JPEG qualities are read off real frames, and against a world whose
sensor is known (Poisson-Gaussian noise, with or without grain) it learns that noise; the
adversarial loss alone does not (it pushes the noise down: refiner/simgan/sensor.py)."""

import io

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import convolve, gaussian_filter

from refiner.config import SimGANParams
from refiner.simgan import sensor
from refiner.simgan.trainer import SimGANTrainer


def jpeg_frames(qualities, rng, size=48, channels=3) -> np.ndarray:
    """Smooth noisy scenes saved as JPEG at ``qualities`` and decoded, in [0, 1]."""
    frames = []
    for quality in qualities:
        scene = gaussian_filter(rng.random((size, size, channels)), (3, 3, 0)) * 200 + rng.normal(0, 6, (size, size, channels))
        pixels = np.clip(scene, 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels[..., 0] if channels == 1 else pixels).save(buffer, "JPEG", quality=int(quality))
        frames.append(np.asarray(Image.open(buffer), np.float64) / 255)
    return np.stack(frames)


def test_a_frames_jpeg_quality_is_read_off_its_coefficients():
    rng = np.random.default_rng(0)
    qualities = [20, 35, 50, 65, 80]
    for channels in (3, 1):
        frames = jpeg_frames(qualities, rng, channels=channels)
        read = [sensor.frame_quality(frame) for frame in frames]
        assert all(abs(r - q) <= 1 for r, q in zip(read, qualities)), (channels, read)
    pool = jpeg_frames(rng.integers(30, 60, 40), rng)
    found = sensor.frame_qualities(pool)
    assert found is not None and 30 <= found.min() and found.max() < 60


def test_frames_never_jpeg_coded_read_as_none():
    rng = np.random.default_rng(1)
    noisy = np.clip(gaussian_filter(rng.random((40, 48, 48, 3)), (0, 3, 3, 0)) + rng.normal(0, 0.03, (40, 48, 48, 3)), 0, 1)
    clean = np.round(gaussian_filter(rng.random((40, 48, 48, 3)), (0, 3, 3, 0)) * 255) / 255
    assert np.isnan(sensor.frame_quality(noisy[0])) and sensor.frame_qualities(noisy) is None
    assert sensor.frame_qualities(clean) is None
    resized = np.stack([np.asarray(Image.fromarray((f * 255).astype(np.uint8)).resize((44, 44)), np.float64) / 255
                        for f in jpeg_frames([40] * 20, rng)])
    assert sensor.frame_qualities(resized) is None  # its 8x8 grid is gone


SHOT, READ = 0.003, 0.01  # the known sensor: variance 0.003 * signal + 0.01**2 (7.3 levels at mid-grey)
GRAIN = np.array([[0.0, 0.15, 0.0], [0.15, 0.4, 0.15], [0.0, 0.15, 0.0]])


def scenes(count, rng, size=24) -> np.ndarray:
    """Grey scenes with flat regions and soft edges, every brightness represented."""
    return np.clip(gaussian_filter(rng.random((count, size, size)), (0, 2.5, 2.5)) * 4 - 1.5, 0, 1).astype(np.float32)


def through_sensor(images, rng, grain, variance=lambda y: SHOT * y + READ ** 2) -> np.ndarray:
    white = rng.standard_normal(images.shape)
    if grain:
        white = np.stack([convolve(w, GRAIN / np.sqrt((GRAIN ** 2).sum()), mode="wrap") for w in white])
    return np.round(np.clip(images + np.sqrt(variance(images)) * white, 0, 1) * 255).astype(np.float32) / 255


def learnt_sensor(grain: bool, sensor_weight: float = 1.0, colour: str | None = None, **sensor) -> dict:
    """The camera alone trained on grey scenes against other scenes through the known sensor;
    ``colour``: the scenes as RGB, their noise "independent" between channels or "grey" (one)."""
    rng = np.random.default_rng(2)
    synthetic, camera_scenes = scenes(400, rng), scenes(400, rng)
    real = through_sensor(camera_scenes, rng, grain, **sensor)
    if colour:
        synthetic = np.repeat(synthetic[..., None], 3, -1)
        channels = [real] + ([through_sensor(camera_scenes, rng, grain) for _ in range(2)] if colour == "independent"
                             else [real, real])
        real = np.stack(channels, -1)
    config = SimGANParams(channels=4, num_blocks=1, batch_size=32, pretrain_refiner_steps=0, pretrain_disc_steps=20,
                          steps=120, disc_layers=((16, 2), (32, 1)), camera=True, residual=False, disc_global=16,
                          conditional=False, log_every=60, sensor_weight=sensor_weight)
    trainer = SimGANTrainer(synthetic, real, config)
    trainer.train(progress=False)
    return {key.removeprefix("camera_"): value for key, value in trainer.camera_settings().items()}


@pytest.mark.parametrize("grain", [False, True])
def test_the_camera_learns_a_known_sensors_noise(grain):
    torch.manual_seed(0)
    learnt = learnt_sensor(grain)
    truth = {brightness: np.sqrt(SHOT * value + READ ** 2) * 255 for brightness, value in (("black", 0), ("white", 1))}
    truth["sigma"] = np.sqrt(SHOT * 0.5 + READ ** 2) * 255
    assert learnt["noise_sigma_levels"] == pytest.approx(truth["sigma"], rel=0.3), learnt
    assert learnt["noise_white_levels"] == pytest.approx(truth["white"], rel=0.3), learnt
    assert learnt["noise_black_levels"] < 0.6 * learnt["noise_white_levels"], learnt  # it grows with the signal
    neighbours = 2 * GRAIN[1, 0] * GRAIN[1, 1] / (GRAIN ** 2).sum()  # the world's neighbour correlation: 0.55
    assert learnt["grain"] > 0.5 * neighbours if grain else abs(learnt["grain"]) < 0.2, learnt


def test_a_noise_that_shrinks_towards_white_is_learnt_so():
    """After a tone curve the noise is largest in the dark (12 levels in black, 4 in white here):
    the camera's noise level is linear in variance between its black and white, either way."""
    torch.manual_seed(0)
    learnt = learnt_sensor(False, variance=lambda y: (12 / 255) ** 2 + ((4 / 255) ** 2 - (12 / 255) ** 2) * y)
    assert learnt["noise_black_levels"] == pytest.approx(12, rel=0.3), learnt
    assert learnt["noise_white_levels"] < 0.6 * learnt["noise_black_levels"], learnt


def test_without_the_statistics_the_noise_does_not_learn():
    learnt = learnt_sensor(False, sensor_weight=0.0)
    assert learnt["noise_sigma_levels"] < 0.5 * np.sqrt(SHOT * 0.5 + READ ** 2) * 255, learnt


@pytest.mark.parametrize("colour", ["grey", "independent"])
def test_the_camera_learns_whether_its_noise_is_colour(colour):
    """Grey frames read as RGB have one noise in all three channels: colour noise there made
    refined frames trivially told apart (realism 1.000 on a grey dial world)."""
    torch.manual_seed(0)
    learnt = learnt_sensor(False, colour=colour)
    assert learnt["colour_noise"] < 0.2 if colour == "grey" else learnt["colour_noise"] > 0.7, learnt
    assert learnt["noise_sigma_levels"] == pytest.approx(np.sqrt(SHOT * 0.5 + READ ** 2) * 255, rel=0.3), learnt
