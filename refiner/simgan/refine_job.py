"""Refine a synthetic dataset with Ray Data: read Parquet -> refiner actors -> contract writer.

The refiner runs in a pool of actors (``ActorPoolStrategy``), each loading the checkpoint
once: one actor per GPU when the cluster has GPUs, fractional-CPU actors otherwise. The
driver streams finished batches, in input order, into the dataset writer: output part i
holds exactly the rows of input file i, so memory stays bounded by one part however many
images pass, and a killed job rerun with the same inputs refines only the parts it had not
finished (the staging directory is keyed by source digest, checkpoint, precision, params
and the refine code, so parts made another way are never mixed in). Rows
keep their id, labels and order; only ``image`` and ``source`` change.

Works on a local Ray or, given an address (or ``RAY_ADDRESS``), on a cluster: the
checkpoint travels as bytes, so workers need no shared filesystem for it.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import sys
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from refiner import data
from refiner.data import storage
from refiner.progress import bar
from refiner.simgan.camera import CameraRefiner
from refiner.simgan.trainer import from_model, load_refiner, to_model

PRECISIONS = ("fp32", "bf16")


class RefinerPredictor:
    """One per actor: holds the refiner on its device, refines pyarrow batches.

    The GPU branch: one actor per GPU resource (``actor_resources``), the model and its
    inputs channels-last on CUDA (the layout cuDNN's fastest convolutions take), bf16
    autocast when asked. An actor holding a GPU resource on a node with no CUDA device (a
    cluster that advertises GPUs it does not have, as the tests' does) runs that branch on
    CPU and says so (in the job's log); there it keeps the default layout, which on CPU buys
    nothing and changes float rounding, so its bytes equal a CPU run's."""

    def __init__(self, checkpoint: bytes, image_shape: list[int], precision: str = "fp32", cpu_threads: int = 1,
                 image_encoding: str = "png"):
        import ray
        holds_gpu = ray.is_initialized() and bool(ray.get_gpu_ids())
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.channels_last = self.device == "cuda"
        if self.device == "cpu":
            torch.set_num_threads(cpu_threads)
        if holds_gpu and self.device == "cpu":
            print(f"refine: this actor holds GPU {ray.get_gpu_ids()} but the node has no CUDA device: "
                  f"running the GPU branch ({precision}) on CPU", flush=True)
        self.model = load_refiner(io.BytesIO(checkpoint), image_shape, self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.precision, self.image_shape, self.image_encoding = precision, image_shape, image_encoding

    def __call__(self, batch: pa.Table) -> pa.Table:
        return refine_table(self.model, batch, self.image_shape, self.image_encoding, self.device, self.precision,
                            self.channels_last)


@torch.no_grad()
def refine_pixels(model: torch.nn.Module, images01: np.ndarray, device: str = "cpu", precision: str = "fp32",
                  channels_last: bool = False) -> np.ndarray:
    x = to_model(images01).to(device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast(device, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    with autocast:
        return from_model(model(x).float())


def refine_table(model: torch.nn.Module, table: pa.Table, image_shape: list[int], image_encoding: str = "png",
                 device: str = "cpu", precision: str = "fp32", channels_last: bool = False) -> pa.Table:
    """Refines a batch of rows; the refined images in ``image_encoding`` (either input encoding)."""
    pixels = data.decode_image_column(table, "<refine batch>", image_shape)
    refined = data.to_uint8(refine_pixels(model, pixels, device, precision, channels_last))
    image = data.image_column(refined, image_encoding)
    table = table.set_column(table.schema.get_field_index("image"), pa.field("image", image.type), image)
    return table.set_column(table.schema.get_field_index("source"), "source",
                            pa.array(["refined"] * table.num_rows, pa.string()))


NO_METRICS = {"RAY_enable_metrics_collection": "0", "DASHBOARD_METRIC_PORT": "-1", "AUTOSCALER_METRIC_PORT": "-1"}


def ensure_ray(address: str | None = None) -> None:
    import ray
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:  # a cluster: its workers' messages belong in the job's log
        ray.init(address=address)
    else:
        # "local": a new instance even where `ray start` runs a cluster on this machine (else
        # ray.init joins it, and refuses the resource arguments). No Prometheus endpoint:
        # Ray serves them on every interface without a token. Collection off closes the
        # agent's; the dashboard's and the autoscaler monitor's bind to every interface
        # unless the node address is loopback, which ray.init never makes it (it resolves
        # 127.0.0.1 to a reachable address), so an invalid port keeps each from starting (a
        # line in its own log under Ray's session directory; nothing else reads them).
        for setting, value in NO_METRICS.items():
            os.environ.setdefault(setting, value)
        ray.init(address="local", num_cpus=os.cpu_count(), object_store_memory=512 * 2**20,
                 include_dashboard=False, log_to_driver=False)


def actor_resources(num_actors: int, actor_num_cpus: float) -> dict:
    """One GPU per actor where the cluster has GPUs; else fractional CPUs (whole CPUs per
    actor on a small machine starve the read and write steps). GPU actors take the same
    fractional CPUs: with Ray Data's default of one CPU each, a node with one CPU per GPU
    never ran a read task (measured on a two-node cluster: the job hung). ``num_gpus`` is
    left unset on CPU clusters: a 0 there keeps actors from scheduling."""
    import ray
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if gpus:
        print(f"refine: the cluster has {gpus} GPUs: {min(num_actors, gpus)} actors, one GPU each")
        return {"compute": ray.data.ActorPoolStrategy(size=min(num_actors, gpus)), "num_gpus": 1,
                "num_cpus": actor_num_cpus}
    return {"compute": ray.data.ActorPoolStrategy(size=num_actors), "num_cpus": actor_num_cpus}


def code_version() -> str:
    """A hash of the modules that turn a synthetic part into refined bytes: parts refined by
    other code are never resumed into a dataset."""
    from refiner.simgan import camera, networks, trainer
    digest = hashlib.sha256()
    for path in [*sorted(Path(data.__file__).parent.glob("*.py")), Path(networks.__file__), Path(trainer.__file__),
                 Path(camera.__file__), Path(__file__)]:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def job_key(source: data.ImageDataset, checkpoint_bytes: bytes, params: dict) -> str:
    """Names the staging directory: a rerun of the same job resumes; any change to what sets
    the output bytes (source, checkpoint, params such as precision, code) starts clean."""
    material = [source.digest, hashlib.sha256(checkpoint_bytes).hexdigest(), data.canonical_json(params),
                code_version()]
    return hashlib.sha256("\n".join(material).encode()).hexdigest()[:16]


def refine_dataset(source: data.ImageDataset, checkpoint: Path, out: Path, *, producer: str = __name__,
                   batch_size: int = 1024,
                   num_actors: int = 2, actor_num_cpus: float = 0.5, precision: str = "fp32",
                   ray_address: str | None = None, progress: bool = True, params: dict | None = None,
                   upstream: dict | None = None, image_encoding: str = "png") -> data.ImageDataset:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    load_refiner(checkpoint, source.manifest["image_shape"])  # a mismatch fails before any work
    checkpoint_bytes = Path(checkpoint).read_bytes()
    params = {**(params or {}), "precision": precision}  # the manifest says how its bytes were made
    shape = source.manifest["image_shape"]
    # the actors make each image from a checked input image of the same shape: the writer
    # checks ids and labels, and leaves the images undecoded (a decode per image would cost
    # the driver as much as the PNG encoding the actors do)
    with data.open_writer(out, label_schema=source.label_schema, producer=producer,
                          params=params, upstream=upstream, check_images=False,
                          image_encoding=image_encoding, image_shape=shape,
                          resume_key=job_key(source, checkpoint_bytes, {**params, "encoding": image_encoding})) as writer:
        todo = [i for i in range(len(source.files)) if not writer.has_part(i)]
        if len(todo) < len(source.files):
            print(f"refine: resuming, {len(source.files) - len(todo)} of {len(source.files)} parts already refined")
        if todo:
            batches = _refined_batches(source, todo, checkpoint_bytes, batch_size, num_actors, actor_num_cpus,
                                       precision, image_encoding, ray_address, progress)
            _write_parts(writer, batches, todo, [source.manifest["files"][i]["rows"] for i in todo], progress)
    return data.open_dataset(out)


def _refined_batches(source, todo, checkpoint_bytes, batch_size, num_actors, actor_num_cpus, precision,
                     image_encoding, ray_address, progress):
    import ray
    ensure_ray(ray_address)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # same order in, same order (and digest) out
    # Ray's own bars only in a terminal (elsewhere they log a status line per operator every few
    # seconds); _write_parts counts the rows either way
    context.enable_progress_bars = progress and sys.stderr.isatty()
    # The reader merges small files into one block, which would feed one actor: cut the
    # stream into batch-sized blocks (a streaming repartition, no shuffle) for the pool.
    # absolute paths: a cluster's workers do not run in the driver's directory; objects in S3
    # are read by the workers themselves (no shared filesystem), with the driver's S3 settings
    if storage.is_remote(source.path):
        filesystem, files = storage.resolve(source.path)[0], [storage.resolve(source.files[i])[1] for i in todo]
    else:
        filesystem, files = None, [str(source.files[i].resolve()) for i in todo]
    if not context.enable_progress_bars:  # _write_parts' bar counts the rows: Ray's notice about its own is noise
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    # no more actors than batches: an actor with no batch to take only warns (a small input)
    num_actors = max(1, min(num_actors, -(-sum(source.manifest["files"][i]["rows"] for i in todo) // batch_size)))
    rows = ray.data.read_parquet(files, filesystem=filesystem).repartition(target_num_rows_per_block=batch_size)
    refined = rows.map_batches(
        RefinerPredictor, fn_constructor_kwargs={"checkpoint": checkpoint_bytes, "precision": precision,
                                                 "image_shape": source.manifest["image_shape"],
                                                 "image_encoding": image_encoding},
        # Ray Data's own restarts of a lost actor are kept: turning them off locally took
        # `max_restarts=0` through `ray_remote_args`, which Ray 2.60 deprecates and 2.64 removes
        batch_size=batch_size, batch_format="pyarrow", **actor_resources(num_actors, actor_num_cpus))
    return refined.iter_batches(batch_size=None, batch_format="pyarrow")


def _write_parts(writer: data.DatasetWriter, batches, part_indices: list[int], part_rows: list[int],
                 progress: bool = False) -> None:
    """Cut the ordered stream of refined rows back into the input's parts."""
    pending: list[pa.Table] = []
    pending_rows, position = 0, 0
    meter = bar(desc="refine", total=sum(part_rows), enabled=progress, unit="img", unit_scale=True)
    for batch in batches:
        meter.update(batch.num_rows)
        pending.append(batch)
        pending_rows += batch.num_rows
        while position < len(part_indices) and pending_rows >= part_rows[position]:
            table = pa.concat_tables(pending)
            writer.write_part(part_indices[position], table.slice(0, part_rows[position]))
            rest = table.slice(part_rows[position])
            pending, pending_rows = [rest], rest.num_rows
            position += 1
    meter.close()
    while position < len(part_indices) and part_rows[position] == 0:  # empty input parts
        writer.write_part(part_indices[position], writer.schema.empty_table())
        position += 1
    if position != len(part_indices) or pending_rows:
        raise RuntimeError(f"refine: expected {sum(part_rows)} rows, the job returned a different number")


def refine_in_process(model: torch.nn.Module, images01: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """The plain torch loop the Ray job must agree with (tests, benchmarks)."""
    return np.concatenate([refine_pixels(model, images01[i:i + batch_size])
                           for i in range(0, len(images01), batch_size)])


@torch.no_grad()
def scenes_in_process(model: CameraRefiner, images01: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """What a camera refiner's residual made of each scene, before its camera model: the
    camera moves no pixel, so a label the refiner loses, it loses here."""
    return np.concatenate([from_model(model.parts(to_model(images01[i:i + batch_size]))[0])
                           for i in range(0, len(images01), batch_size)])
