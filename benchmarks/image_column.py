"""The image column's encodings: bytes per image and read + decode speed per core.

    python benchmarks/image_column.py            # the table (about a minute on 2 cores)
    python benchmarks/image_column.py --quick    # a smoke run

For each image size (digits 8x8, the paper's 35x55 eyes, 64x64 RGB), writes one Parquet
part of the same images in each encoding and times what every stage does with it: read
the part (one thread: per core) and turn its image column into a uint8 N x H x W (x C)
array. Encodings:

- png: the contract's PNG encoding (the Hugging Face Image struct), decoded with PIL;
- raw: the contract's raw encoding, pixel bytes in a large_binary column (one buffer);
- hf-array: Hugging Face's own Array2D/Array3D storage (nested lists), read with pyarrow,
  for comparison: what `datasets` writes for a fixed-shape array column.

Every speed is compared with png's in the same run (these machines are shared and noisy).
Images are renders (digits, synthetic eyes, the shapes example world's camera images for
RGB), so PNG compresses as it would in use. Prints a table and
writes benchmarks/results/image_column.json.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from refiner import data
from stages.common import write_json


@dataclass
class Args:
    images: int = 20_000   # per size: one Parquet part, as the stages write them
    repeats: int = 3       # best of, per encoding
    out: Path = Path("benchmarks/results/image_column.json")
    quick: bool = False    # small sizes: a smoke run


def sample_images(kind: str, count: int) -> np.ndarray:
    """``count`` uint8 images of a kind, cycling through rendered ones."""
    if kind == "digits 8x8":
        from refiner.tasks.digits import renderer
        _, counts, _ = renderer.render_digits(min(count, 5000), seed=0, progress=False)
        images = data.to_uint8(renderer.counts_to_unit(counts))
    elif kind == "eyes 35x55":
        from refiner.tasks.gaze import renderer
        images = data.to_uint8(renderer.render_eyes(min(count, 2000), seed=0, progress=False)[1])
    else:
        from refiner.tasks.images import example
        rng = np.random.default_rng(0)
        images = np.stack([np.asarray(example.camera(example.render_scene(rng)[0], rng))
                           for _ in range(min(count, 1000))])
    return images[np.arange(count) % len(images)]


def hf_array_column(images: np.ndarray) -> pa.Array:
    """Hugging Face's Array2D/Array3D storage: one list level per dimension."""
    column: pa.Array = pa.array(images.reshape(-1))
    for dimension in reversed(images.shape[1:]):
        offsets = np.arange(len(column) // dimension + 1, dtype=np.int32) * dimension
        column = pa.ListArray.from_arrays(pa.array(offsets), column)
    return column


def hf_array_decode(column: pa.Array, shape) -> np.ndarray:
    for _ in shape:
        column = column.flatten()
    return column.to_numpy().reshape(-1, *shape)


def write_part(images: np.ndarray, encoding: str, path: Path) -> None:
    ids = [f"i-{i:08d}" for i in range(len(images))]
    if encoding == "hf-array":
        table = pa.table({"id": ids, "image": hf_array_column(images)})
    else:
        table = data.make_table(ids, images, {}, "synthetic", pa.schema([]), encoding)
    pq.write_table(table, path, compression="zstd", row_group_size=8192)  # as DatasetWriter writes parts


def read_decode(path: Path, encoding: str, shape) -> np.ndarray:
    table = pq.read_table(path, columns=["id", "image"], use_threads=False)
    if encoding == "hf-array":
        return hf_array_decode(table.column("image").combine_chunks(), shape)
    return data.decode_image_column_uint8(table, str(path), list(shape))


def measure(images: np.ndarray, encoding: str, directory: Path, repeats: int) -> dict:
    path = directory / f"{encoding}.parquet"
    start = time.perf_counter()
    write_part(images, encoding, path)
    encode_seconds = time.perf_counter() - start
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        decoded = read_decode(path, encoding, images.shape[1:])
        best = min(best, time.perf_counter() - start)
    if not np.array_equal(decoded, images):
        raise AssertionError(f"{encoding}: decoded images differ from the written ones")
    return {"bytes_per_image": path.stat().st_size / len(images), "read_decode_images_per_s": len(images) / best,
            "encode_write_images_per_s": len(images) / encode_seconds}


def main(args: Args) -> dict:
    if args.quick:
        args.images, args.repeats = 2_000, 1
    import torch
    torch.set_num_threads(1)
    pa.set_cpu_count(1)  # per core: no decoding threads behind the timer's back
    results = {"machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                           "pyarrow": pa.__version__}, "args": {k: str(v) for k, v in asdict(args).items()},
               "sizes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("digits 8x8", "eyes 35x55", "RGB 64x64"):
            images = sample_images(kind, args.images)
            results["sizes"][kind] = {encoding: measure(images, encoding, Path(tmp), args.repeats)
                                      for encoding in ("png", "raw", "hf-array")}
            print(f"{kind}: done", flush=True)
    report(results)
    write_json(args.out, results)
    print(f"wrote {args.out}")
    return results


def report(results: dict) -> None:
    print("\n| images | encoding | bytes / image | read + decode, images/s per core | vs png | encode + write, images/s |")
    print("|---|---|---|---|---|---|")
    for kind, encodings in results["sizes"].items():
        png = encodings["png"]["read_decode_images_per_s"]
        for encoding, r in encodings.items():
            print(f"| {kind} | {encoding} | {r['bytes_per_image']:,.0f} | {r['read_decode_images_per_s']:,.0f} "
                  f"| {r['read_decode_images_per_s'] / png:.1f}x | {r['encode_write_images_per_s']:,.0f} |")


if __name__ == "__main__":
    import tyro
    main(tyro.cli(Args, description=__doc__))
