"""Reading datasets: open (manifest and file hashes), validate (every row), and the two
openers the training stages use, which refuse what must never train."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from refiner.data import storage
from refiner.data.checks import BadLabels, RowChecker, check_schema
from refiner.data.codec import decode_image_column
from refiner.data.manifest import FORMAT, MANIFEST, check_manifest, file_sha256, manifest_digest
from refiner.data.schema import REAL, canonical_type, label_numpy
from refiner.errors import DatasetError


def read_parquet(file, **options) -> pa.Table:
    """A local Parquet file, or an ``s3://`` object's."""
    filesystem, where = storage.resolve(file) if storage.is_remote(file) else (None, file)
    return pq.read_table(where, filesystem=filesystem, **options)


@dataclass(frozen=True)
class ImageDataset:
    path: Path | str  # a directory, or an s3:// prefix
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
    def image_encoding(self) -> str:
        return self.manifest.get("image_encoding", "png")  # datasets written before raw existed

    @property
    def label_schema(self) -> pa.Schema:
        """The label columns with their pyarrow types, as the producing task declared them."""
        filesystem, where = storage.resolve(self.files[0]) if storage.is_remote(self.path) else (None, self.files[0])
        schema = pq.read_schema(where, filesystem=filesystem)
        return pa.schema([schema.field(name).with_type(canonical_type(schema.field(name).type))  # metadata kept
                          for name in self.label_columns])

    @property
    def files(self) -> list:
        """Paths, or ``s3://`` URIs for a dataset in object storage."""
        if storage.is_remote(self.path):
            return [f"{self.path}/{f['name']}" for f in self.manifest["files"]]
        return [self.path / f["name"] for f in self.manifest["files"]]

    def tables(self) -> Iterator[tuple[Path, pa.Table]]:
        expected = self.manifest["schema"]
        for file, entry in zip(self.files, self.manifest["files"]):
            try:
                table = read_parquet(file)
            except Exception as err:
                raise DatasetError(f"{file}: not a readable Parquet file ({err})") from err
            check_schema(table.schema, expected, file)
            if table.num_rows != entry["rows"]:
                raise DatasetError(f"{file}: holds {table.num_rows} rows, the manifest says {entry['rows']}")
            yield file, table

    def load(self) -> dict[str, np.ndarray]:
        """Everything in memory: ids, images (float32 N x H x W in [0,1]) and label columns."""
        parts = [(file, table) for file, table in self.tables()]
        out = {"id": np.array([i for _, t in parts for i in t.column("id").to_pylist()], dtype=object)}
        images = [decode_image_column(t, str(f), self.manifest["image_shape"]) for f, t in parts if t.num_rows]
        out["image"] = np.concatenate(images) if images else np.zeros((0, 0, 0), np.float32)
        for name in self.label_columns:
            out[name] = np.concatenate([label_numpy(t.column(name)) for _, t in parts])
        return out


def open_dataset(path: str | Path, *, verify_hashes: bool = True) -> ImageDataset:
    """Open and validate a dataset (a directory or an ``s3://`` prefix): manifest present and
    well-formed, files intact."""
    from pyarrow import fs
    remote = storage.is_remote(path)
    path = str(path).rstrip("/") if remote else Path(path)
    filesystem, root = storage.resolve(path) if remote else (fs.LocalFileSystem(), str(path))
    manifest_path = f"{path}/{MANIFEST}" if remote else path / MANIFEST
    if filesystem.get_file_info(f"{root}/{MANIFEST}").type != fs.FileType.File:
        raise DatasetError(f"{path}: no {MANIFEST}; not a simrefinery dataset or an unfinished write")
    try:
        with filesystem.open_input_stream(f"{root}/{MANIFEST}") as stream:
            manifest = json.loads(stream.read())
    except json.JSONDecodeError as err:
        raise DatasetError(f"{manifest_path}: invalid JSON ({err})") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise DatasetError(f"{manifest_path}: format {found!r}, expected {FORMAT!r}")
    check_manifest(manifest, str(manifest_path))
    for entry in manifest["files"]:
        file = f"{path}/{entry['name']}" if remote else path / entry["name"]
        where = f"{root}/{entry['name']}"
        if filesystem.get_file_info(where).type != fs.FileType.File:
            raise DatasetError(f"{file}: listed in the manifest but missing")
        if not remote and not file.resolve().is_relative_to(path.resolve()):
            raise DatasetError(f"{file}: a link to {file.resolve()}, outside the dataset")
        if verify_hashes and file_sha256(where, filesystem) != entry["sha256"]:
            raise DatasetError(f"{file}: content does not match the manifest's sha256 (modified or corrupt)")
    return ImageDataset(path, manifest)


def validate(path: str | Path, bad_labels: BadLabels | None = None) -> ImageDataset:
    """The one validation pass every stage runs on its inputs before any work: the manifest
    and file hashes, each file's schema, then row by row (``RowChecker``: ids, labels,
    ``bad_labels``, every image decodes with the manifest's shape), one file in memory at a
    time; a dataset with no rows is refused."""
    dataset = open_dataset(path)
    if not dataset.num_rows:
        raise DatasetError(f"{dataset.path}: the dataset has no rows")
    rows = RowChecker(dataset.label_columns, bad_labels, dataset.manifest["image_shape"])
    total = 0
    for file, table in dataset.tables():
        rows.check(table, str(file))
        total += table.num_rows
    if total != dataset.num_rows:
        raise DatasetError(f"{dataset.path}: manifest says {dataset.num_rows} rows, files hold {total}")
    return dataset


def open_unlabeled(path: str | Path) -> ImageDataset:
    """Real images for training (the refiner, self-training), validated: refuse any dataset
    with labels."""
    real = validate(path)
    if real.label_columns:
        raise DatasetError(f"{path}: real data for training must be unlabelled, has label columns {real.label_columns}")
    return real


def open_training_set(path: str | Path, label_schema: pa.Schema, bad_labels: BadLabels | None = None) -> ImageDataset:
    """Synthetic or refined images to train an estimator on (or to refine), validated:
    refuse real rows (``source`` real: only evaluate reads real labels) and data without the
    task's label columns."""
    data = validate(path, bad_labels)
    if any(pc.any(pc.equal(read_parquet(file, columns=["source"]).column("source"), REAL)).as_py() for file in data.files):
        raise DatasetError(f"{path}: real data must not train the estimator (only evaluate reads real labels)")
    missing = [name for name in label_schema.names if name not in data.label_columns]
    if missing:
        raise DatasetError(f"{path}: has no {missing} label column(s) to train on (has {data.label_columns})")
    for field in label_schema:  # e.g. a boolean where the task's class is an integer
        declared, expected = data.manifest["schema"][field.name], str(canonical_type(field.type))
        if declared != expected:
            raise DatasetError(f"{path}: label {field.name!r} is {declared}, the task's is {expected}")
    return data
