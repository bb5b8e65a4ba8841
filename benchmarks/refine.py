"""Refine throughput and memory: the Ray Data stage against a bare torch loop, same run.

    python benchmarks/refine.py                 # the full table (about 10 minutes on 2 cores)
    python benchmarks/refine.py --quick         # a smoke run with small sizes

Prints a table and writes benchmarks/results/refine.json. Every figure that is compared is
a ratio against a baseline measured in the same run (these machines are shared and noisy):
- images/s of the whole Ray stage (read Parquet, decode PNG, refine, encode PNG, write the
  contract dataset) against a single-process torch loop over the same images in memory;
- 2 actors against 1 actor;
- achieved GFLOP/s (2 x multiply-accumulates per image x images/s) against the machine's
  peak, estimated by a large float32 matmul;
- peak memory (driver + every Ray process) at the small size against the large size.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import psutil
import torch

from refiner import dataset
from refiner.tasks.digits import renderer as digits
from refiner.networks import count_macs
from refiner.refine_job import ensure_ray, refine_dataset, refine_in_process
from refiner.config import SimGANParams
from refiner.simgan import build_refiner


@dataclass
class Args:
    sizes: tuple[int, ...] = (100_000, 1_000_000)  # digits images; memory is compared across these
    batch_size: int = 4096
    rows_per_file: int = 50_000
    paper_images: int = 2_000                      # 35x55 images through the paper's 64-channel refiner
    paper_batch_size: int = 256
    threads: int = 2
    out: Path = Path("benchmarks/results/refine.json")
    quick: bool = False


class PeakMemory:
    """Peak of the summed proportional set size (PSS: shared pages such as Ray's object
    store split between the processes mapping them, not counted once per process) of this
    process and all its descendants (the Ray processes a local ray.init starts)."""

    def __init__(self):
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for process in [me, *me.children(recursive=True)]:
                try:
                    total += process.memory_full_info().pss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(0.5)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def matmul_peak_gflops(threads: int, n: int = 2048, repeats: int = 10) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def checkpoint_file(config: SimGANParams, image_shape, directory: Path) -> tuple[Path, torch.nn.Module]:
    """An untrained refiner of the given shape: the cost of a forward pass does not depend on weights."""
    torch.manual_seed(0)
    model = build_refiner(config).eval()
    path = directory / f"refiner-{config.channels}.pt"
    torch.save({"state_dict": model.state_dict(), "config": config.model_dump(mode="json", by_alias=True), "in_channels": 1,
                "image_shape": list(image_shape)}, path)
    return path, model


def source_dataset(images_uint8: np.ndarray, count: int, path: Path, rows_per_file: int) -> dataset.ImageDataset:
    """``count`` rows cycling through the given images (real PNG sizes, any count)."""
    with dataset.DatasetWriter(path, label_columns=("label",), producer="benchmark") as writer:
        for index, start in enumerate(range(0, count, rows_per_file)):
            rows = np.arange(start, min(start + rows_per_file, count))
            writer.write_part(index, dataset.make_table([f"b-{i:08d}" for i in rows], images_uint8[rows % len(images_uint8)],
                                                        {"label": rows % 10}, "synthetic"))
    return dataset.open_dataset(path)


def bare_loop(model, images01: np.ndarray, batch_size: int, threads: int) -> float:
    torch.set_num_threads(threads)
    refine_in_process(model, images01[:batch_size], batch_size)  # warm-up
    start = time.perf_counter()
    refine_in_process(model, images01, batch_size)
    return len(images01) / (time.perf_counter() - start)


def ray_stage(source, checkpoint, out: Path, batch_size: int, num_actors: int) -> tuple[float, int]:
    with PeakMemory() as memory:
        start = time.perf_counter()
        refine_dataset(source, checkpoint, out, batch_size=batch_size, num_actors=num_actors,
                       actor_num_cpus=0.5, progress=False)
        seconds = time.perf_counter() - start
    return source.num_rows / seconds, memory.peak


def main(args: Args) -> dict:
    if args.quick:
        args.sizes, args.paper_images, args.batch_size, args.rows_per_file = (4_000, 16_000), 64, 1024, 2_000
    results = {"machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                           "torch": torch.__version__, "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
               "args": {k: str(v) for k, v in asdict(args).items()}}
    peak = matmul_peak_gflops(args.threads)
    results["matmul_peak_gflops"] = peak
    ensure_ray()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _, rendered, _ = digits.render_digits(5000, seed=0, progress=False)
        rendered = dataset.to_uint8(digits.counts_to_unit(rendered))
        config = SimGANParams()
        checkpoint, model = checkpoint_file(config, (8, 8), tmp)
        flops = 2 * count_macs(model, (8, 8))
        results["digits"] = {"refiner_gflop_per_image": flops / 1e9, "runs": []}
        small = min(args.sizes)
        images01 = rendered[np.arange(small) % len(rendered)].astype(np.float32) / 255
        bare = bare_loop(model, images01, args.batch_size, args.threads)
        results["digits"]["bare_images_per_s"] = bare
        for size in args.sizes:
            source = source_dataset(rendered, size, tmp / f"src-{size}", args.rows_per_file)
            actor_counts = (1, 2) if size == small else (2,)
            for actors in actor_counts:
                speed, memory = ray_stage(source, checkpoint, tmp / f"out-{size}-{actors}", args.batch_size, actors)
                results["digits"]["runs"].append({"images": size, "actors": actors, "images_per_s": speed,
                                                  "peak_memory_gib": memory / 2**30})
                print(f"digits {size:>9,} images, {actors} actor(s): {speed:,.0f} images/s, "
                      f"peak memory {memory / 2**30:.2f} GiB", flush=True)
        # the paper's size and refiner: 35x55, 64 channels, 4 ResNet blocks
        paper = SimGANParams(channels=64, num_blocks=4)
        paper_checkpoint, paper_model = checkpoint_file(paper, (35, 55), tmp)
        paper_flops = 2 * count_macs(paper_model, (35, 55))
        eyes = np.random.default_rng(0).integers(0, 256, (256, 35, 55), dtype=np.uint8)
        eyes01 = eyes[np.arange(args.paper_images) % len(eyes)].astype(np.float32) / 255
        paper_bare = bare_loop(paper_model, eyes01, args.paper_batch_size, args.threads)
        paper_source = source_dataset(eyes, args.paper_images, tmp / "paper-src", args.rows_per_file)
        paper_ray, _ = ray_stage(paper_source, paper_checkpoint, tmp / "paper-out", args.paper_batch_size, 2)
        results["paper_35x55"] = {"refiner_gflop_per_image": paper_flops / 1e9, "bare_images_per_s": paper_bare,
                                  "ray_images_per_s": paper_ray}
    report(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return results


def report(results: dict) -> None:
    peak, d = results["matmul_peak_gflops"], results["digits"]
    runs = {(r["images"], r["actors"]): r for r in d["runs"]}
    small, large = min(i for i, _ in runs), max(i for i, _ in runs)
    ray2 = runs[(small, 2)]["images_per_s"]
    rows = [
        ("matmul peak (float32)", f"{peak:,.1f} GFLOP/s", ""),
        ("digits refiner, per image", f"{d['refiner_gflop_per_image'] * 1e3:.2f} MFLOP", ""),
        ("digits bare torch loop", f"{d['bare_images_per_s']:,.0f} img/s",
         f"{d['bare_images_per_s'] * d['refiner_gflop_per_image'] / peak:.0%} of peak"),
        (f"digits Ray stage, 2 actors, {small:,}", f"{ray2:,.0f} img/s", f"{ray2 / d['bare_images_per_s']:.2f}x bare loop"),
        (f"digits Ray stage, 1 actor, {small:,}", f"{runs[(small, 1)]['images_per_s']:,.0f} img/s",
         f"2 actors: {ray2 / runs[(small, 1)]['images_per_s']:.2f}x"),
        (f"digits Ray stage, 2 actors, {large:,}", f"{runs[(large, 2)]['images_per_s']:,.0f} img/s", ""),
        (f"peak memory {small:,} / {large:,}", f"{runs[(small, 2)]['peak_memory_gib']:.2f} / {runs[(large, 2)]['peak_memory_gib']:.2f} GiB",
         f"{runs[(large, 2)]['peak_memory_gib'] / runs[(small, 2)]['peak_memory_gib']:.2f}x"),
    ]
    p = results["paper_35x55"]
    rows += [
        ("35x55, 64-ch refiner, per image", f"{p['refiner_gflop_per_image']:.3f} GFLOP", ""),
        ("35x55 bare torch loop", f"{p['bare_images_per_s']:,.1f} img/s",
         f"{p['bare_images_per_s'] * p['refiner_gflop_per_image'] / peak:.0%} of peak"),
        ("35x55 Ray stage, 2 actors", f"{p['ray_images_per_s']:,.1f} img/s",
         f"{p['ray_images_per_s'] / p['bare_images_per_s']:.2f}x bare loop"),
    ]
    width = max(len(r[0]) for r in rows)
    print()
    for name, value, ratio in rows:
        print(f"{name:<{width}}  {value:>18}  {ratio}")


if __name__ == "__main__":
    import argparse
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    main(Args(quick=parser.parse_args().quick))
