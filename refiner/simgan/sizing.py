"""A refiner sized to the world: width, depth, batch and the discriminator's receptive field
from the image size, and what one training round costs on this machine, measured.

The paper's local discriminator sees 5x5 patches: most of an 8x8 digit, stroke fragments at
28x28 (a discriminator there stayed at chance for a whole run). So past 12 pixels the local
discriminator's patch grows with the image, to about 40% of its shorter side, by stride-2
convolutions (which also cut its cost), and the refiner narrows as the pixels grow.
"""

from __future__ import annotations

import time

import numpy as np

from refiner.config import SimGANParams
from refiner.simgan.trainer import SimGANTrainer

CPU_NOTE = ("Refining millions of images belongs on GPUs: refine.precision bf16, one actor per GPU "
            "(docs/cluster-and-storage.md).")
PATCH_SHARE = 0.4  # the local discriminator's patch: this share of the image's shorter side


def receptive_field(disc_layers) -> int:
    """The side of the patch one logit of the local discriminator sees (3x3 convolutions)."""
    field, jump = 1, 1
    for _, stride in disc_layers:
        field, jump = field + 2 * jump, jump * stride
    return field


def local_discriminator(image_shape) -> tuple[tuple[int, int], ...]:
    """The paper's two stride-1 convolutions up to 12 pixels; beyond, stride-2 convolutions
    (then one stride-1) until the patch is about ``PATCH_SHARE`` of the shorter side."""
    side = min(image_shape[:2])
    if side <= 12:
        return SimGANParams().disc_layers
    strided = 1
    while receptive_field([(0, 2)] * strided + [(0, 1)]) < PATCH_SHARE * side:
        strided += 1
    widths = [32, 64, 64, 64, 64][:strided]
    return tuple((width, 2) for width in widths) + ((64, 1),)


def sized(image_shape) -> dict:
    """The train_refiner keys that depend on the image size."""
    pixels = image_shape[0] * image_shape[1]
    if pixels <= 12 * 12:
        return {}  # the defaults, chosen on the 8x8 digits
    if pixels <= 40 * 40:
        return {"channels": 32, "num_blocks": 2, "batch_size": 64, "disc_layers": local_discriminator(image_shape)}
    return {"channels": 16, "num_blocks": 2, "batch_size": 32, "disc_layers": local_discriminator(image_shape)}


def seconds_per_round(config: SimGANParams, image_shape, rounds: int = 3) -> float:
    """One adversarial round on random images of this shape, timed on this machine."""
    rng = np.random.default_rng(0)
    images = rng.random((max(config.batch_size, 16), *image_shape), dtype=np.float32)
    return time_rounds(SimGANTrainer(images, images, config.model_copy(update={"history_size": config.batch_size})),
                       rounds)


def time_rounds(trainer: SimGANTrainer, rounds: int) -> float:
    """The median seconds of one adversarial round (kg refiner + kd discriminator steps) of
    ``trainer``, after one warm-up round."""
    times = []
    for _ in range(rounds + 1):
        start = time.perf_counter()
        for _ in range(trainer.config.kg):
            trainer.refiner_step()
        for _ in range(trainer.config.kd):
            trainer.discriminator_step()
        times.append(time.perf_counter() - start)
    return float(np.median(times[1:]))


def training_minutes(config: SimGANParams, image_shape) -> float:
    """The whole schedule's minutes on this machine, from a timed round (pretraining steps
    counted as a third of a round each: one forward and backward of one network)."""
    rounds = config.steps + (config.pretrain_refiner_steps + config.pretrain_disc_steps) / 3
    return seconds_per_round(config, image_shape) * rounds / 60
