"""The image-dataset contract: every stage reads and writes datasets through this module.

A dataset is a directory of Parquet files with deterministic names (``part-00000.parquet``,
...) plus ``_manifest.json`` (row count, file hashes, schema, producer, params, upstream
digests). Its digest is the SHA-256 of the canonical manifest, so DVC, MLflow and Prefect
all name the same bytes the same way.

The ``image`` column is the Hugging Face ``Image`` struct (``{bytes, path}``) holding
8-bit grayscale PNG bytes: pyarrow, pandas, Ray Data and ``datasets`` read it without
project code (schema metadata tells ``datasets`` to decode it as an image).

Writes are atomic: files go to a hidden staging directory beside the target, which is
renamed into place only once complete, so a reader never sees a half-written dataset and
an interrupted write leaves the previous dataset (if any) untouched. A writer given a
resume key keeps its finished parts across a crash, so a long job can pick up where it
stopped.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

FORMAT = "simrefinery.imageset/1"
MANIFEST = "_manifest.json"  # leading "_": whole-directory Parquet readers skip it
IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
LABEL_TYPES = {"label": pa.int64(), "gaze_pitch": pa.float32(), "gaze_yaw": pa.float32()}
HF_DTYPES = {"label": "int64", "gaze_pitch": "float32", "gaze_yaw": "float32"}


class DatasetError(ValueError):
    """A dataset (or one of its files) breaks the contract; the message names which and why."""


def schema_for(label_columns: tuple[str, ...]) -> pa.Schema:
    fields = [pa.field("id", pa.string(), nullable=False), pa.field("image", IMAGE_TYPE)]
    fields += [pa.field(name, LABEL_TYPES[name]) for name in label_columns]
    fields.append(pa.field("source", pa.string()))
    hf_features = {"id": {"dtype": "string", "_type": "Value"}, "image": {"_type": "Image"}}
    for name in label_columns:
        hf_features[name] = {"dtype": HF_DTYPES[name], "_type": "Value"}
    hf_features["source"] = {"dtype": "string", "_type": "Value"}
    metadata = {b"huggingface": json.dumps({"info": {"features": hf_features}}).encode()}
    return pa.schema(fields, metadata=metadata)


# ---------------------------------------------------------------- pixels <-> PNG bytes

def encode_png(pixels: np.ndarray) -> bytes:
    """uint8 HxW array -> PNG bytes (compress_level fixed so bytes are reproducible)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8), mode="L").save(
        buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("L"), dtype=np.uint8)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Float images in [0, 1] -> uint8, rounding to the nearest of 256 levels."""
    return np.clip(np.rint(np.asarray(images, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)


def image_column(images_uint8: np.ndarray) -> pa.Array:
    return pa.array([{"bytes": encode_png(img), "path": None} for img in images_uint8],
                    type=IMAGE_TYPE)


def decode_image_column(table: pa.Table, file_name: str = "<memory>") -> np.ndarray:
    """The image column of a table -> float32 N x H x W in [0, 1]."""
    ids = table.column("id").to_pylist()
    images = []
    for row_id, cell in zip(ids, table.column("image").combine_chunks().field("bytes").to_pylist()):
        try:
            images.append(decode_png(cell))
        except Exception as err:  # PIL raises several types for corrupt bytes
            raise DatasetError(f"{file_name}: row id={row_id!r}: image is not a readable PNG ({err})") from err
    if not images:
        return np.zeros((0, 0, 0), dtype=np.float32)
    return np.stack(images).astype(np.float32) / 255.0


def make_table(ids, images_uint8: np.ndarray, labels: dict[str, np.ndarray], source: str) -> pa.Table:
    schema = schema_for(tuple(labels))
    columns = {"id": pa.array(list(ids), pa.string()), "image": image_column(images_uint8)}
    for name, values in labels.items():
        columns[name] = pa.array(np.asarray(values), LABEL_TYPES[name])
    columns["source"] = pa.array([source] * len(columns["id"]), pa.string())
    return pa.table(columns, schema=schema)


# ---------------------------------------------------------------- writing

def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def manifest_digest(manifest: dict) -> str:
    return hashlib.sha256(canonical_json(manifest).encode()).hexdigest()


class DatasetWriter:
    """Writes numbered parts into a hidden staging directory; commits atomically on close.

    Use as a context manager: on an exception nothing is committed (finished parts stay
    staged when a ``resume_key`` is given, else the staging directory is removed). With a
    ``resume_key`` the staging directory is named by it, so a rerun of the same job after a
    crash or kill finds the parts already written (``has_part``) and only writes the rest.
    Each part file is itself written to a temporary name and renamed, so a staged part is
    always complete.
    """

    def __init__(self, path: str | Path, *, label_columns: tuple[str, ...], producer: str,
                 params: dict | None = None, upstream: dict[str, str] | None = None,
                 resume_key: str | None = None):
        self.path = Path(path)
        self.schema = schema_for(tuple(label_columns))
        self.label_columns = tuple(label_columns)
        self.producer, self.params, self.upstream = producer, params or {}, upstream or {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        name = f".{self.path.name}.partial-{resume_key}" if resume_key else f".{self.path.name}.tmp-{uuid.uuid4().hex[:8]}"
        self.tmp = self.path.parent / name
        for stale in self.path.parent.glob(f".{self.path.name}.*"):
            if stale != self.tmp and (".tmp-" in stale.name or ".partial-" in stale.name):
                shutil.rmtree(stale, ignore_errors=True)
        self.tmp.mkdir(exist_ok=True)
        for half_written in self.tmp.glob(".*.writing"):
            half_written.unlink()
        self.resume_key = resume_key
        self.manifest: dict | None = None

    @staticmethod
    def part_name(index: int) -> str:
        return f"part-{index:05d}.parquet"

    def has_part(self, index: int) -> bool:
        return (self.tmp / self.part_name(index)).is_file()

    def write_part(self, index: int, table: pa.Table) -> None:
        table = self._conform(table)
        target = self.tmp / self.part_name(index)
        writing = self.tmp / f".{target.name}.writing"
        pq.write_table(table, writing, compression="zstd", row_group_size=8192)
        os.replace(writing, target)

    def _conform(self, table: pa.Table) -> pa.Table:
        expected = [f.name for f in self.schema]
        if sorted(table.column_names) != sorted(expected):
            raise DatasetError(f"{self.path}: columns {table.column_names} do not match contract {expected}")
        return table.select(expected).cast(self.schema)

    def commit(self) -> dict:
        parts = sorted(self.tmp.glob("part-*.parquet"))
        if not parts:
            self.write_part(0, self.schema.empty_table())
            parts = sorted(self.tmp.glob("part-*.parquet"))
        if [p.name for p in parts] != [self.part_name(i) for i in range(len(parts))]:
            raise DatasetError(f"{self.path}: parts are not numbered 0..{len(parts) - 1}: {[p.name for p in parts]}")
        files = [{"name": p.name, "rows": pq.ParquetFile(p).metadata.num_rows, "sha256": file_sha256(p)} for p in parts]
        first = next((p for p, f in zip(parts, files) if f["rows"]), None)
        image_shape = None
        if first:  # every image of a dataset has one shape: read it off the first
            first_image = pq.read_table(first, columns=["image"]).column("image")[0]["bytes"].as_py()
            image_shape = list(decode_png(first_image).shape)
        self.manifest = {
            "format": FORMAT,
            "num_rows": sum(f["rows"] for f in files),
            "image_shape": image_shape,
            "label_columns": list(self.label_columns),
            "schema": {f.name: str(f.type) for f in self.schema},
            "files": files,
            "producer": self.producer,
            "params": self.params,
            "upstream": dict(sorted(self.upstream.items())),
        }
        (self.tmp / MANIFEST).write_text(json.dumps(self.manifest, indent=2, sort_keys=True, default=str))
        _replace_dir(self.tmp, self.path)
        return self.manifest

    def abort(self) -> None:
        if self.resume_key is None:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def _replace_dir(src: Path, dst: Path) -> None:
    """Move a finished directory into place; the old one is removed only after."""
    old = dst.parent / f".{dst.name}.old-{uuid.uuid4().hex[:8]}"
    if dst.exists():
        os.replace(dst, old)
    os.replace(src, dst)
    shutil.rmtree(old, ignore_errors=True)


def write_dataset(path, ids, images_uint8, labels: dict[str, np.ndarray], *, source: str,
                  producer: str, params: dict | None = None, upstream: dict | None = None,
                  rows_per_file: int = 50_000) -> dict:
    """Write a whole in-memory dataset in parts of ``rows_per_file`` rows; returns the manifest."""
    with DatasetWriter(path, label_columns=tuple(labels), producer=producer, params=params,
                       upstream=upstream) as writer:
        for index, start in enumerate(range(0, len(ids), rows_per_file)):
            stop = start + rows_per_file
            writer.write_part(index, make_table(ids[start:stop], images_uint8[start:stop],
                                                {k: v[start:stop] for k, v in labels.items()}, source))
    return writer.manifest


# ---------------------------------------------------------------- reading

@dataclass(frozen=True)
class ImageDataset:
    path: Path
    manifest: dict

    @property
    def digest(self) -> str:
        return manifest_digest(self.manifest)

    @property
    def num_rows(self) -> int:
        return self.manifest["num_rows"]

    @property
    def label_columns(self) -> list[str]:
        return self.manifest["label_columns"]

    @property
    def files(self) -> list[Path]:
        return [self.path / f["name"] for f in self.manifest["files"]]

    def tables(self) -> Iterator[tuple[Path, pa.Table]]:
        expected = schema_for(tuple(self.label_columns))
        for file in self.files:
            try:
                table = pq.read_table(file)
            except Exception as err:
                raise DatasetError(f"{file}: not a readable Parquet file ({err})") from err
            check_schema(table.schema, expected, file)
            yield file, table

    def load(self) -> dict[str, np.ndarray]:
        """Everything in memory: ids, images (float32 N x H x W in [0,1]) and label columns."""
        parts = [(file, table) for file, table in self.tables()]
        out = {"id": np.array([i for _, t in parts for i in t.column("id").to_pylist()], dtype=object)}
        images = [decode_image_column(t, str(f)) for f, t in parts if t.num_rows]
        out["image"] = np.concatenate(images) if images else np.zeros((0, 0, 0), np.float32)
        for name in self.label_columns:
            out[name] = np.concatenate([t.column(name).to_numpy() for _, t in parts])
        return out


def check_schema(actual: pa.Schema, expected: pa.Schema, file) -> None:
    for field in expected:
        if field.name not in actual.names:
            raise DatasetError(f"{file}: missing column {field.name!r} (has {actual.names})")
        got = actual.field(field.name).type
        if got != field.type:
            raise DatasetError(f"{file}: column {field.name!r} has type {got}, expected {field.type}")


def open_dataset(path: str | Path, *, verify_hashes: bool = True) -> ImageDataset:
    """Open and validate a dataset: manifest present and well-formed, files intact."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise DatasetError(f"{path}: no {MANIFEST}; not a simrefinery dataset or an unfinished write")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as err:
        raise DatasetError(f"{manifest_path}: invalid JSON ({err})") from err
    if manifest.get("format") != FORMAT:
        raise DatasetError(f"{manifest_path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    for entry in manifest["files"]:
        file = path / entry["name"]
        if not file.is_file():
            raise DatasetError(f"{file}: listed in the manifest but missing")
        if verify_hashes and file_sha256(file) != entry["sha256"]:
            raise DatasetError(f"{file}: content does not match the manifest's sha256 (modified or corrupt)")
    return ImageDataset(path, manifest)


def validate(path: str | Path) -> ImageDataset:
    """Full check: hashes, schema of every file, every image decodes, row counts match."""
    dataset = open_dataset(path)
    total = 0
    for file, table in dataset.tables():
        decode_image_column(table, str(file))
        total += table.num_rows
    if total != dataset.num_rows:
        raise DatasetError(f"{dataset.path}: manifest says {dataset.num_rows} rows, files hold {total}")
    return dataset
