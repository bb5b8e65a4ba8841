"""Refine throughput and memory: the Ray Data stage against a bare torch loop, same run.

    python benchmarks/refine.py                 # the full table (about 15 minutes on 2 cores)
    python benchmarks/refine.py --quick         # a smoke run with small sizes
    python benchmarks/refine.py --device cuda   # the GPU branch's forward pass (writes refine-cuda.json)
    python benchmarks/refine.py --s3            # the stage on local files vs a local S3 server (refine-s3.json)

Prints a table and writes benchmarks/results/refine.json. Every figure that is compared is
a ratio against a baseline measured in the same run (these machines are shared and noisy):
- images/s of the whole Ray stage (read Parquet, decode the images, refine, encode them,
  write the contract dataset) against a single-process torch loop over the same images in
  memory, for each image encoding (png, raw);
- 2 actors against 1 actor, per encoding;
- achieved GFLOP/s (2 x multiply-accumulates per image x images/s) against the machine's
  peak, estimated by a large float32 matmul;
- peak memory (driver + every Ray process) at the small size against the large size (the
  default encoding, raw).

``--device cuda`` measures what a GPU actor does per batch instead: the paper's refiner on
35x55 images at several batch sizes, fp32 and bf16 autocast, default and channels-last
layout, eager and ``torch.compile``, as images/s and as a fraction of the device's
measured matmul peak in the same precision.
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import torch

from refiner import data
from refiner.config import SimGANParams
from refiner.simgan.networks import count_macs
from refiner.simgan.refine_job import ensure_ray, refine_dataset, refine_in_process
from refiner.simgan.trainer import build_refiner
from refiner.tasks.digits import renderer as digits
from stages.common import write_json


@dataclass
class Args:
    sizes: tuple[int, ...] = (100_000, 1_000_000)  # digits images; memory is compared across these
    encodings: tuple[str, ...] = ("png", "raw")      # each at the small size; the large size: the last only
    batch_size: int = 4096
    rows_per_file: int = 50_000
    paper_images: int = 2_000                      # 35x55 images through the paper's 64-channel refiner
    paper_batch_size: int = 256
    threads: int = 2
    out: Path = Path("benchmarks/results/refine.json")
    quick: bool = False    # small sizes: a smoke run
    device: str | None = None  # cuda (or cpu): the GPU branch's forward-pass table instead of the Ray stage's
    device_batch_sizes: tuple[int, ...] = (256, 1024, 4096)
    s3: bool = False       # the stage reading and writing a local S3 server (moto) against local files
    s3_repeats: int = 3


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


LABELS = pa.schema([("label", pa.int64())])


def source_dataset(images_uint8: np.ndarray, count: int, path: Path, rows_per_file: int,
                   encoding: str) -> data.ImageDataset:
    """``count`` rows cycling through the given images (real PNG sizes, any count)."""
    with data.open_writer(path, label_schema=LABELS, producer="benchmark", image_encoding=encoding,
                          image_shape=list(images_uint8.shape[1:])) as writer:
        for index, start in enumerate(range(0, count, rows_per_file)):
            rows = np.arange(start, min(start + rows_per_file, count))
            writer.write_part(index, data.make_table([f"b-{i:08d}" for i in rows], images_uint8[rows % len(images_uint8)],
                                                     {"label": rows % 10}, "synthetic", LABELS, encoding))
    return data.open_dataset(path)


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
                       actor_num_cpus=0.5, progress=False, image_encoding=source.image_encoding)
        seconds = time.perf_counter() - start
    return source.num_rows / seconds, memory.peak


def timed_images_per_s(step, images: int, seconds: float = 2.0, synchronize=lambda: None) -> float:
    """Calls ``step`` (one batch of ``images``) for about ``seconds`` after a warm-up."""
    for _ in range(3):
        step()
    synchronize()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        calls += 1
    synchronize()
    return calls * images / (time.perf_counter() - start)


def device_table(args: Args) -> dict:
    """The GPU branch's forward pass on ``args.device``: images/s and fraction of peak."""
    device = torch.device(args.device)
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    config = SimGANParams(channels=64, num_blocks=4)
    flops = 2 * count_macs(build_refiner(config), (35, 55))
    peaks = {}
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.randn(8192 if device.type == "cuda" else 1024, 8192 if device.type == "cuda" else 1024,
                        device=device, dtype=dtype)
        peaks[precision] = timed_images_per_s(lambda a=a: a @ a, 1, 1.0, synchronize) * 2 * a.shape[0] ** 3 / 1e9
    rows = []
    for compiled in (False, True):
        for channels_last in (False, True):
            for precision in ("fp32", "bf16"):
                model = build_refiner(config).to(device).eval()
                if channels_last:
                    model = model.to(memory_format=torch.channels_last)
                forward = torch.compile(model) if compiled else model
                for batch_size in args.device_batch_sizes:
                    x = torch.rand(batch_size, 1, 35, 55, device=device) * 2 - 1
                    if channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

                    def step(forward=forward, x=x, autocast=autocast):
                        with torch.no_grad(), autocast:
                            forward(x)
                    speed = timed_images_per_s(step, batch_size, synchronize=synchronize)
                    row = {"batch_size": batch_size, "precision": precision, "channels_last": channels_last,
                           "compiled": compiled, "images_per_s": speed,
                           "fraction_of_peak": speed * flops / 1e9 / peaks[precision]}
                    rows.append(row)
                    print(f"| {batch_size} | {precision} | {channels_last} | {compiled} | {speed:,.0f} "
                          f"| {row['fraction_of_peak']:.0%} |", flush=True)
    return {"device": name, "torch": torch.__version__, "refiner_gflop_per_image": flops / 1e9,
            "matmul_peak_gflops": peaks, "runs": rows}


def s3_table(args: Args) -> dict:
    """The same refine job (digits, raw, 2 actors) on local files and on a local S3 server
    (moto's server mode on 127.0.0.1: a real S3 API, in this process), alternating runs."""
    from moto.server import ThreadedMotoServer
    import boto3
    size = args.sizes[0] if not args.quick else 4_000
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
                       "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"})
    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}").create_bucket(Bucket="bench")
    ensure_ray()
    runs = {"local": [], "s3": []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            _, rendered, _ = digits.render_digits(5000, seed=0, progress=False)
            rendered = data.to_uint8(digits.counts_to_unit(rendered))
            checkpoint, _ = checkpoint_file(SimGANParams(), (8, 8), tmp)
            sources = {"local": source_dataset(rendered, size, tmp / "src", args.rows_per_file, "raw"),
                       "s3": source_dataset(rendered, size, "s3://bench/src", args.rows_per_file, "raw")}
            for repeat in range(args.s3_repeats):
                for where, source in sources.items():
                    out = tmp / f"out-{repeat}" if where == "local" else f"s3://bench/out-{repeat}"
                    speed, _ = ray_stage(source, checkpoint, out, args.batch_size, 2)
                    runs[where].append(speed)
                    print(f"{where}: {speed:,.0f} images/s", flush=True)
    finally:
        server.stop()
    best = {where: max(speeds) for where, speeds in runs.items()}
    print(f"| digits {size:,}, raw, 2 actors | local files {best['local']:,.0f} img/s | local S3 server "
          f"{best['s3']:,.0f} img/s | S3 / local {best['s3'] / best['local']:.2f}x |")
    return {"images": size, "runs": runs, "best_images_per_s": best, "s3_over_local": best["s3"] / best["local"]}


def main(args: Args) -> dict:
    if args.s3:
        results = s3_table(args)
        write_json(args.out.with_name("refine-s3.json"), results)
        return results
    if args.device is not None:
        if args.quick:
            args.device_batch_sizes = (64,)
        print("| batch | precision | channels-last | torch.compile | images/s | of matmul peak |\n|---|---|---|---|---|---|")
        results = device_table(args)
        out = args.out.with_name(f"refine-{args.device.split(':')[0]}.json")
        write_json(out, results)
        print(f"{results['device']}: matmul peak {results['matmul_peak_gflops']} GFLOP/s; wrote {out}")
        return results
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
        rendered = data.to_uint8(digits.counts_to_unit(rendered))
        config = SimGANParams()
        checkpoint, model = checkpoint_file(config, (8, 8), tmp)
        flops = 2 * count_macs(model, (8, 8))
        results["digits"] = {"refiner_gflop_per_image": flops / 1e9, "runs": []}
        small = min(args.sizes)
        images01 = rendered[np.arange(small) % len(rendered)].astype(np.float32) / 255
        bare = bare_loop(model, images01, args.batch_size, args.threads)
        results["digits"]["bare_images_per_s"] = bare
        default = args.encodings[-1]
        for encoding in args.encodings:
            for size in args.sizes if encoding == default else (small,):
                source = source_dataset(rendered, size, tmp / f"src-{encoding}-{size}", args.rows_per_file, encoding)
                for actors in (1, 2) if size == small else (2,):
                    speed, memory = ray_stage(source, checkpoint, tmp / f"out-{encoding}-{size}-{actors}",
                                              args.batch_size, actors)
                    results["digits"]["runs"].append({"encoding": encoding, "images": size, "actors": actors,
                                                      "images_per_s": speed, "peak_memory_gib": memory / 2**30})
                    print(f"digits {encoding} {size:>9,} images, {actors} actor(s): {speed:,.0f} images/s, "
                          f"peak memory {memory / 2**30:.2f} GiB", flush=True)
                shutil.rmtree(source.path)
        # the paper's size and refiner: 35x55, 64 channels, 4 ResNet blocks
        paper = SimGANParams(channels=64, num_blocks=4)
        paper_checkpoint, paper_model = checkpoint_file(paper, (35, 55), tmp)
        paper_flops = 2 * count_macs(paper_model, (35, 55))
        eyes = np.random.default_rng(0).integers(0, 256, (256, 35, 55), dtype=np.uint8)
        eyes01 = eyes[np.arange(args.paper_images) % len(eyes)].astype(np.float32) / 255
        paper_bare = bare_loop(paper_model, eyes01, args.paper_batch_size, args.threads)
        paper_source = source_dataset(eyes, args.paper_images, tmp / "paper-src", args.rows_per_file, default)
        paper_ray, _ = ray_stage(paper_source, paper_checkpoint, tmp / "paper-out", args.paper_batch_size, 2)
        results["paper_35x55"] = {"refiner_gflop_per_image": paper_flops / 1e9, "bare_images_per_s": paper_bare,
                                  "ray_images_per_s": paper_ray}
    report(results)
    write_json(args.out, results)
    print(f"wrote {args.out}")
    return results


def report(results: dict) -> None:
    peak, d = results["matmul_peak_gflops"], results["digits"]
    runs = {(r["encoding"], r["images"], r["actors"]): r for r in d["runs"]}
    small, large = min(i for _, i, _ in runs), max(i for _, i, _ in runs)
    default = d["runs"][-1]["encoding"]
    rows = [
        ("matmul peak (float32)", f"{peak:,.1f} GFLOP/s", ""),
        ("digits refiner, per image", f"{d['refiner_gflop_per_image'] * 1e3:.2f} MFLOP", ""),
        ("digits bare torch loop", f"{d['bare_images_per_s']:,.0f} img/s",
         f"{d['bare_images_per_s'] * d['refiner_gflop_per_image'] / peak:.0%} of peak"),
    ]
    for encoding in dict.fromkeys(e for e, _, _ in runs):
        ray2, ray1 = runs[(encoding, small, 2)]["images_per_s"], runs[(encoding, small, 1)]["images_per_s"]
        rows += [(f"digits Ray stage, {encoding}, 2 actors, {small:,}", f"{ray2:,.0f} img/s",
                  f"{ray2 / d['bare_images_per_s']:.2f}x bare loop"),
                 (f"digits Ray stage, {encoding}, 1 actor, {small:,}", f"{ray1:,.0f} img/s", f"2 actors: {ray2 / ray1:.2f}x")]
    big, base = runs[(default, large, 2)], runs[(default, small, 2)]
    rows += [(f"digits Ray stage, {default}, 2 actors, {large:,}", f"{big['images_per_s']:,.0f} img/s",
              f"{big['images_per_s'] / d['bare_images_per_s']:.2f}x bare loop"),
             (f"peak memory {small:,} / {large:,} ({default})",
              f"{base['peak_memory_gib']:.2f} / {big['peak_memory_gib']:.2f} GiB",
              f"{big['peak_memory_gib'] / base['peak_memory_gib']:.2f}x")]
    p = results["paper_35x55"]
    rows += [
        ("35x55, 64-ch refiner, per image", f"{p['refiner_gflop_per_image']:.3f} GFLOP", ""),
        ("35x55 bare torch loop", f"{p['bare_images_per_s']:,.1f} img/s",
         f"{p['bare_images_per_s'] * p['refiner_gflop_per_image'] / peak:.0%} of peak"),
        (f"35x55 Ray stage, {default}, 2 actors", f"{p['ray_images_per_s']:,.1f} img/s",
         f"{p['ray_images_per_s'] / p['bare_images_per_s']:.2f}x bare loop"),
    ]
    width = max(len(r[0]) for r in rows)
    print()
    for name, value, ratio in rows:
        print(f"{name:<{width}}  {value:>18}  {ratio}")


if __name__ == "__main__":
    import tyro
    main(tyro.cli(Args, description=__doc__))
