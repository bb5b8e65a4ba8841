"""Refiner training throughput: synthetic images per second through adversarial rounds (kg
refiner + kd discriminator steps), at the sizes `simrefinery init` chooses for 8x8 digits,
35x55 eyes and 64x64 RGB frames, against the machine's matmul peak measured in the same run.

    python benchmarks/refiner_training.py            # prints a table, writes benchmarks/results/refiner_training.json
    python benchmarks/refiner_training.py --quick    # fewer rounds

images/s counts each round's refiner batches (kg x batch_size synthetic images); GFLOP/s is
2 x multiply-accumulates of the forward passes a round makes, x3 for their backward passes,
so "of matmul peak" is how much of the machine's float32 throughput the training uses.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.refine import matmul_peak_gflops
from refiner.config import SimGANParams
from refiner.simgan import sizing
from refiner.simgan.networks import count_macs
from refiner.simgan.trainer import SimGANTrainer
from stages.common import write_json

CAMERA = {"camera": True, "disc_global": 32}  # what init adds for a user's world


@dataclass
class Args:
    rounds: int = 10
    threads: int = 2
    quick: bool = False
    out: Path = Path("benchmarks/results/refiner_training.json")


def round_flops(trainer: SimGANTrainer, shape) -> float:
    """Forward multiply-accumulates of one round, x2 for FLOPs, x3 with the backward passes."""
    channels = shape[2] if len(shape) == 3 else 1
    refiner = count_macs(trainer.refiner, shape[:2], channels)
    judges = count_macs(trainer.discriminator, shape[:2], channels)
    if trainer.global_discriminator is not None:
        judges += count_macs(trainer.global_discriminator, shape[:2], channels)
    batch, config = trainer.config.batch_size, trainer.config
    # a refiner step: refiner + judges forward; a discriminator step: refiner forward, judges on real and fake
    macs = config.kg * batch * (refiner + judges) + config.kd * batch * (refiner + 2 * judges)
    return 2 * 3 * macs


def measure(name: str, shape, extra: dict, rounds: int) -> dict:
    config = SimGANParams.model_validate({**sizing.sized(shape), **extra})
    rng = np.random.default_rng(0)
    images = rng.random((max(4 * config.batch_size, 64), *shape), dtype=np.float32)
    trainer = SimGANTrainer(images, images, config.model_copy(update={"history_size": config.batch_size}))
    seconds = sizing.time_rounds(trainer, rounds)
    return {"world": name, "shape": list(shape), "channels": config.channels, "num_blocks": config.num_blocks,
            "batch_size": config.batch_size, "patch": sizing.receptive_field(config.disc_layers),
            "camera": config.camera, "global_discriminator": bool(config.disc_global),
            "seconds_per_round": seconds, "images_per_s": config.kg * config.batch_size / seconds,
            "gflops": round_flops(trainer, shape) / seconds / 1e9,
            "minutes_for_default_schedule": seconds * (config.steps + (config.pretrain_refiner_steps
                                                                        + config.pretrain_disc_steps) / 3) / 60}


def main(args: Args) -> dict:
    torch.set_num_threads(args.threads)
    rounds = 3 if args.quick else args.rounds
    peak = matmul_peak_gflops(args.threads)
    worlds = [("digits 8x8", (8, 8), {}), ("gaze 35x55", (35, 55), {}),
              ("shapes 64x64 RGB", (64, 64, 3), CAMERA), ("shapes 64x64 RGB, no camera", (64, 64, 3), {})]
    rows = [measure(name, shape, extra, rounds) for name, shape, extra in worlds]
    print(f"matmul peak {peak:.0f} GFLOP/s ({args.threads} threads)\n")
    print("| world | refiner | patch | images/s | GFLOP/s | of matmul peak | 300 rounds + pretraining |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['world']} | {row['channels']} x {row['num_blocks']}, batch {row['batch_size']}"
              f"{', camera + global D' if row['camera'] else ''} | {row['patch']} | {row['images_per_s']:.0f} | "
              f"{row['gflops']:.1f} | {row['gflops'] / peak:.1%} | {row['minutes_for_default_schedule']:.1f} min |")
    results = {"machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                           "torch": torch.__version__}, "matmul_peak_gflops": peak, "rounds": rounds, "runs": rows}
    write_json(args.out, results)
    return results


if __name__ == "__main__":
    import tyro
    main(tyro.cli(Args, description=__doc__))
