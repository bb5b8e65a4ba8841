"""Writing datasets: ``open_writer(path, ...)`` for a local directory or an ``s3://`` prefix.

Writes are atomic: parts go to a hidden staging place beside the target and appear under
the target's name only once the whole dataset is complete, so a reader never sees a
half-written dataset and an interrupted write leaves the previous dataset (if any)
untouched. Locally the staging directory is renamed into place, under a file lock beside
the target (one writer at a time). Object stores have no rename, so there the commit is by
manifest: the old manifest is deleted first (from then on readers see "no manifest:
unfinished write", never a mix), the staged parts are copied to their names server-side,
parts of the old dataset that the new one lacks are removed, and the manifest is written
last. There is no lock on object storage: one writer per target is the caller's to keep
(the refine stage is one job). A dataset with no rows is never committed. A writer given a
resume key keeps its finished parts across a crash, so a long job picks up where it stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock, Timeout

from refiner.data import storage
from refiner.data.checks import BadLabels, RowChecker
from refiner.data.codec import channels, decode_png, image_column
from refiner.data.card import CARD, dataset_card
from refiner.data.manifest import FORMAT, MANIFEST, file_sha256
from refiner.data.schema import check_encoding, infer_label_schema, label_array, schema_for
from refiner.errors import DatasetError


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def _staging_name(name: str, resume_key: str | None) -> str:
    return f".{name}.partial-{resume_key}" if resume_key else f".{name}.tmp-{uuid.uuid4().hex[:8]}"


def _is_staging(name: str, target: str) -> bool:
    return name.startswith(f".{target}.") and (".tmp-" in name or ".partial-" in name)


def _swept(location: str, resume_key: str | None) -> None:
    if ".partial-" in location and resume_key:
        print(f"{location}: an interrupted job with other inputs or settings left parts; starting clean")


class LocalStaging:
    """A hidden directory beside a local target, renamed into place on commit, under the
    target's lock: a second writer is refused, so staging left beside the target can only
    be a dead writer's and is swept. Each part is written under a temporary name and
    renamed, so a staged part is always complete."""

    def __init__(self, path: Path, resume_key: str | None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = FileLock(self.path.parent / f".{self.path.name}.lock")
        try:
            self.lock.acquire(timeout=0)
        except Timeout:
            raise DatasetError(f"{self.path}: another process is writing this dataset (lock "
                               f"{self.lock.lock_file}); wait for it to finish or stop it") from None
        self.tmp = self.path.parent / _staging_name(self.path.name, resume_key)
        for stale in self.path.parent.glob(f".{self.path.name}.*"):
            if stale != self.tmp and _is_staging(stale.name, self.path.name):
                _swept(str(stale), resume_key)
                shutil.rmtree(stale, ignore_errors=True)
        self.tmp.mkdir(exist_ok=True)
        for half_written in self.tmp.glob(".*.writing"):
            half_written.unlink()

    def parts(self) -> list[str]:
        return sorted(p.name for p in self.tmp.glob("part-*.parquet"))

    def read(self, name: str, columns: list[str]) -> pa.Table:
        return pq.read_table(self.tmp / name, columns=columns)

    def describe(self, name: str) -> dict:
        return {"name": name, "rows": pq.ParquetFile(self.tmp / name).metadata.num_rows,
                "sha256": file_sha256(self.tmp / name)}

    def write(self, name: str, table: pa.Table) -> None:
        writing = self.tmp / f".{name}.writing"
        pq.write_table(table, writing, compression="zstd", row_group_size=8192)
        os.replace(writing, self.tmp / name)

    def publish(self, manifest: dict) -> None:
        (self.tmp / CARD).write_text(dataset_card(manifest))
        (self.tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
        old = self.path.parent / f".{self.path.name}.old-{uuid.uuid4().hex[:8]}"
        if self.path.exists():
            os.replace(self.path, old)
        os.replace(self.tmp, self.path)
        shutil.rmtree(old, ignore_errors=True)  # the old one is removed only after
        self.lock.release()

    def discard(self, keep_parts: bool) -> None:
        if not keep_parts:
            shutil.rmtree(self.tmp, ignore_errors=True)
        self.lock.release()

    def kept_note(self) -> str:
        return " (the previous dataset is kept)" if self.path.exists() else ""


class ObjectStaging:
    """A hidden prefix beside an ``s3://`` target; the commit is by manifest (module doc).
    Each object appears whole or not at all (a PUT is atomic), so a staged part is complete."""

    def __init__(self, uri: str, resume_key: str | None):
        from pyarrow import fs
        self.path = uri.rstrip("/")
        self.fs, self.root = storage.resolve(self.path)
        parent, name = self.root.rsplit("/", 1) if "/" in self.root else (self.root, "")
        if not name:
            raise DatasetError(f"{self.path}: a dataset needs a prefix inside the bucket (s3://bucket/name)")
        self.tmp = f"{parent}/{_staging_name(name, resume_key)}"
        for stale in self.fs.get_file_info(fs.FileSelector(parent, allow_not_found=True)):
            if stale.path != self.tmp and _is_staging(stale.base_name, name):
                _swept(stale.path, resume_key)
                self.fs.delete_dir(stale.path)

    def parts(self) -> list[str]:
        from pyarrow import fs
        found = self.fs.get_file_info(fs.FileSelector(self.tmp, allow_not_found=True))
        return sorted(f.base_name for f in found if f.base_name.startswith("part-") and f.base_name.endswith(".parquet"))

    def read(self, name: str, columns: list[str]) -> pa.Table:
        return pq.read_table(f"{self.tmp}/{name}", columns=columns, filesystem=self.fs)

    def describe(self, name: str) -> dict:
        where = f"{self.tmp}/{name}"
        return {"name": name, "rows": pq.ParquetFile(self.fs.open_input_file(where)).metadata.num_rows,
                "sha256": file_sha256(where, self.fs)}

    def write(self, name: str, table: pa.Table) -> None:
        pq.write_table(table, f"{self.tmp}/{name}", filesystem=self.fs, compression="zstd", row_group_size=8192)

    def publish(self, manifest: dict) -> None:
        from pyarrow import fs
        names = self.parts()
        target = f"{self.root}/{MANIFEST}"
        if self.fs.get_file_info(target).type == fs.FileType.File:
            self.fs.delete_file(target)  # first: from here readers see an unfinished write, not a mix
        for name in names:
            self.fs.copy_file(f"{self.tmp}/{name}", f"{self.root}/{name}")
        for old in self.fs.get_file_info(fs.FileSelector(self.root, allow_not_found=True)):
            if old.base_name.startswith("part-") and old.base_name not in names:
                self.fs.delete_file(old.path)
        with self.fs.open_output_stream(f"{self.root}/{CARD}") as out:
            out.write(dataset_card(manifest).encode())
        with self.fs.open_output_stream(target) as out:  # last: the commit
            out.write(json.dumps(manifest, indent=2, sort_keys=True, default=str).encode())
        self.fs.delete_dir(self.tmp)

    def discard(self, keep_parts: bool) -> None:
        if not keep_parts:
            self.fs.delete_dir_contents(self.tmp, missing_dir_ok=True)

    def kept_note(self) -> str:
        return ""


class DatasetWriter:
    """Writes numbered parts (``write_part``) and commits them as one dataset on close.

    Use as a context manager (``open_writer``): on an exception nothing is committed
    (finished parts stay staged when a ``resume_key`` is given, else the staging is removed).
    With a ``resume_key`` the staging is named by it, so a rerun of the same job after a
    crash or kill finds the parts already written (``has_part``) and writes only the rest.
    Each part's rows are checked (``RowChecker``) before it is staged; ``bad_labels`` is the
    task's label check. ``image_encoding`` raw needs the ``image_shape`` (raw bytes do not say it).
    """

    def __init__(self, staging: LocalStaging | ObjectStaging, *, label_schema: pa.Schema, producer: str,
                 params: dict | None = None, upstream: dict[str, str] | None = None,
                 resume_key: str | None = None, bad_labels: BadLabels | None = None, check_images: bool = True,
                 image_encoding: str = "png", image_shape: list[int] | None = None):
        self.staging, self.path, self.resume_key = staging, staging.path, resume_key
        self.image_encoding = check_encoding(image_encoding)
        if image_encoding == "raw" and image_shape is None:
            raise ValueError(f"{self.path}: raw images need image_shape")
        self.image_shape = list(image_shape) if image_shape is not None else None
        self.schema = schema_for(label_schema, image_encoding)
        self.label_columns = tuple(label_schema.names)
        self.producer, self.params, self.upstream = producer, params or {}, upstream or {}
        self.manifest: dict | None = None
        self.rows = RowChecker(self.label_columns, bad_labels, self.image_shape, check_images=check_images)
        for kept in staging.parts():  # a resumed job: ids stay unique across parts
            self.rows.remember(staging.read(kept, ["id"]).column("id").to_pylist())

    def has_part(self, index: int) -> bool:
        return part_name(index) in self.staging.parts()

    def write_part(self, index: int, table: pa.Table) -> None:
        name = part_name(index)
        self.staging.write(name, self._conform(table, f"{self.path} ({name})"))

    def _conform(self, table: pa.Table, where: str) -> pa.Table:
        """The contract's columns in its order and types, every row checked."""
        expected = [f.name for f in self.schema]
        if sorted(table.column_names) != sorted(expected):
            raise DatasetError(f"{where}: columns {table.column_names} do not match contract {expected}")
        table = table.select(expected)
        self.rows.check(table, where)
        try:
            return table.cast(self.schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as err:
            raise DatasetError(f"{where}: columns do not have the contract's types ({err})") from err

    def commit(self) -> dict:
        names = self.staging.parts()
        if names != [part_name(i) for i in range(len(names))]:
            raise DatasetError(f"{self.path}: parts are not numbered 0..{len(names) - 1}: {names}")
        files = [self.staging.describe(name) for name in names]
        if not sum(f["rows"] for f in files):
            raise DatasetError(f"{self.path}: no rows to write; nothing committed{self.staging.kept_note()}")
        self.manifest = self._manifest(files, self.image_shape or self._first_png_shape(
            next(f["name"] for f in files if f["rows"])))
        self.staging.publish(self.manifest)
        return self.manifest

    def _manifest(self, files: list[dict], shape: list[int]) -> dict:
        return {
            "format": FORMAT,
            "num_rows": sum(f["rows"] for f in files),
            "image_shape": shape,
            "channels": channels(shape),
            "image_encoding": self.image_encoding,
            "label_columns": list(self.label_columns),
            "schema": {f.name: str(f.type) for f in self.schema},
            "files": files,
            "producer": self.producer,
            "params": self.params,
            "upstream": dict(sorted(self.upstream.items())),
        }

    def _first_png_shape(self, name: str) -> list[int]:
        """Every image of a dataset has one shape (the row checks hold it): read it off the first."""
        return list(decode_png(self.staging.read(name, ["image"]).column("image")[0]["bytes"].as_py()).shape)

    def abort(self) -> None:
        self.staging.discard(keep_parts=self.resume_key is not None)

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                self.commit()
            except BaseException:
                self.abort()
                raise
        else:
            self.abort()


def open_writer(path: str | Path, *, resume_key: str | None = None, **contract) -> DatasetWriter:
    """The writer for a local directory or an ``s3://`` prefix (``DatasetWriter``'s arguments)."""
    staging = ObjectStaging(path, resume_key) if storage.is_remote(path) else LocalStaging(Path(path), resume_key)
    return DatasetWriter(staging, resume_key=resume_key, **contract)


def make_table(ids, images_uint8: np.ndarray, labels: dict[str, np.ndarray], source: str,
               label_schema: pa.Schema | None = None, image_encoding: str = "png") -> pa.Table:
    label_schema = label_schema if label_schema is not None else infer_label_schema(labels)
    schema = schema_for(label_schema, image_encoding)
    columns = {"id": pa.array(list(ids), pa.string()), "image": image_column(images_uint8, image_encoding)}
    for field in label_schema:
        columns[field.name] = label_array(labels[field.name], field.type)
    columns["source"] = pa.array([source] * len(columns["id"]), pa.string())
    return pa.table(columns, schema=schema)


def write_dataset(path, ids, images_uint8, labels: dict[str, np.ndarray], *, source: str,
                  producer: str, label_schema: pa.Schema | None = None, params: dict | None = None,
                  upstream: dict | None = None, rows_per_file: int = 50_000,
                  bad_labels: BadLabels | None = None, image_encoding: str = "png") -> dict:
    """Write a whole in-memory dataset in parts of ``rows_per_file`` rows; returns the manifest.
    ``label_schema``: the task's label types (inferred from the arrays when not given);
    ``bad_labels``: the task's label check."""
    label_schema = label_schema if label_schema is not None else infer_label_schema(labels)
    with open_writer(path, label_schema=label_schema, producer=producer, params=params,
                     upstream=upstream, bad_labels=bad_labels, image_encoding=image_encoding,
                     image_shape=list(np.shape(images_uint8)[1:])) as writer:
        for index, start in enumerate(range(0, len(ids), rows_per_file)):
            stop = start + rows_per_file
            writer.write_part(index, make_table(ids[start:stop], images_uint8[start:stop],
                                                {k: np.asarray(v)[start:stop] for k, v in labels.items()}, source,
                                                label_schema, image_encoding))
    return writer.manifest
