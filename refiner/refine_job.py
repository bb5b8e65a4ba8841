"""Refine a synthetic dataset with Ray Data: read Parquet -> refiner actors -> contract writer.

The refiner runs in a pool of actors (``ActorPoolStrategy``), each loading the checkpoint
once; the driver streams finished batches, in input order, into the dataset writer, which
commits atomically. Rows keep their id, labels and order; only ``image`` and ``source``
change. Works on a local Ray or, given an address (or ``RAY_ADDRESS``), on a cluster: the
checkpoint travels as bytes, so workers need no shared filesystem.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from refiner import dataset
from refiner.simgan import from_model, load_refiner, to_model

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


class RefinerPredictor:
    """One per actor: holds the refiner, refines pyarrow batches."""

    def __init__(self, checkpoint: bytes, image_shape: list[int], num_threads: int = 1):
        torch.set_num_threads(num_threads)
        self.model = load_refiner(io.BytesIO(checkpoint), image_shape)

    @torch.no_grad()
    def __call__(self, batch: pa.Table) -> pa.Table:
        return refine_table(self.model, batch)


def refine_table(model: torch.nn.Module, table: pa.Table) -> pa.Table:
    images = dataset.decode_image_column(table)
    refined = dataset.to_uint8(from_model(model(to_model(images))))
    table = table.set_column(table.schema.get_field_index("image"), "image", dataset.image_column(refined))
    return table.set_column(table.schema.get_field_index("source"), "source",
                            pa.array(["refined"] * table.num_rows, pa.string()))


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    import ray
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count(), object_store_memory=512 * 2**20,
                 include_dashboard=False, log_to_driver=False)


def refine_dataset(source: dataset.ImageDataset, checkpoint: Path, out: Path, *, batch_size: int = 1024,
                   num_actors: int = 2, actor_num_cpus: float = 0.5, rows_per_file: int = 50_000,
                   ray_address: str | None = None, progress: bool = True, params: dict | None = None,
                   upstream: dict | None = None) -> dataset.ImageDataset:
    load_refiner(checkpoint, source.manifest["image_shape"])  # fail before any work
    checkpoint_bytes = Path(checkpoint).read_bytes()
    import ray

    ensure_ray(ray_address)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # same order in, same order (and digest) out
    context.enable_progress_bars = progress
    rows = ray.data.read_parquet([str(f) for f in source.files],
                                 override_num_blocks=max(num_actors * 4, len(source.files)))
    refined = rows.map_batches(
        RefinerPredictor, fn_constructor_kwargs={"checkpoint": checkpoint_bytes,
                                                 "image_shape": source.manifest["image_shape"]},
        batch_size=batch_size, batch_format="pyarrow", num_cpus=actor_num_cpus,
        compute=ray.data.ActorPoolStrategy(size=num_actors))
    with dataset.DatasetWriter(out, label_columns=tuple(source.label_columns), producer="stages.refine",
                               params=params, upstream=upstream, rows_per_file=rows_per_file) as writer:
        for batch in refined.iter_batches(batch_size=None, batch_format="pyarrow"):
            writer.write(batch)
    return dataset.open_dataset(out)


def refine_in_process(model: torch.nn.Module, images01: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """The plain torch loop the Ray job must agree with (tests, benchmarks)."""
    with torch.no_grad():
        return np.concatenate([from_model(model(to_model(images01[i:i + batch_size])))
                               for i in range(0, len(images01), batch_size)])
