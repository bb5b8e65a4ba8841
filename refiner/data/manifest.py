"""The manifest: ``_manifest.json`` beside the parts (row count, file hashes, schema,
producer, params, upstream digests), its structure and declared types checked by one typed
model (``Manifest``). A dataset's digest is the SHA-256 of its canonical
manifest, so DVC, MLflow and Prefect all name the same bytes the same way."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from refiner.errors import DatasetError

FORMAT = "simrefinery.imageset/1"
MANIFEST = "_manifest.json"  # leading "_": whole-directory Parquet readers skip it

def file_sha256(path, filesystem=None) -> str:
    """A local file's SHA-256, or an object's (``filesystem``: pyarrow's), streamed."""
    digest = hashlib.sha256()
    with (filesystem.open_input_stream(path) if filesystem else open(path, "rb")) as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def manifest_digest(manifest: dict) -> str:
    return hashlib.sha256(canonical_json(manifest).encode()).hexdigest()



PART_NAME = re.compile(r"^part-\d{5}\.parquet$")  # the writer's names: no directory, no "..", no absolute path
CONTRACT_COLUMNS = {"id": "string", "source": "string"}
IMAGE_COLUMN = {"png": "struct<bytes: binary, path: string>", "raw": "large_binary"}


class ManifestFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str
    rows: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    @field_validator("name")
    @classmethod
    def _a_part_of_this_dataset(cls, name: str) -> str:
        if not PART_NAME.match(name):
            raise ValueError(f"{name!r} is not one of this dataset's parts (part-NNNNN.parquet in its own directory)")
        return name


class Manifest(BaseModel):
    """``_manifest.json``'s structure, its declared types held to the contract (schema
    version: ``format``). Checked on every open; the dict itself, not this model's dump, is
    what the digest hashes, so a dataset's name does not depend on this code."""
    model_config = ConfigDict(extra="forbid", strict=True)
    format: Literal["simrefinery.imageset/1"]
    num_rows: int = Field(ge=0)
    image_shape: list[int] = Field(min_length=2, max_length=3)
    channels: Literal[1, 3] | None = None  # written since the raw encoding; older manifests lack it
    image_encoding: Literal["png", "raw"] = "png"
    label_columns: list[str]
    schema_: dict[str, str] = Field(alias="schema")
    files: list[ManifestFile]
    producer: str
    params: dict[str, Any]
    upstream: dict[str, str]

    @model_validator(mode="after")
    def _contract(self) -> Manifest:
        shape = self.image_shape
        if min(shape) < 1 or (len(shape) == 3 and shape[2] != 3):
            raise ValueError(f"image_shape {shape}: images are H x W (grayscale) or H x W x 3 (RGB)")
        if self.channels is not None and self.channels != (3 if len(shape) == 3 else 1):
            raise ValueError(f"channels {self.channels} does not match image_shape {shape}")
        if sum(f.rows for f in self.files) != self.num_rows:
            raise ValueError(f"num_rows {self.num_rows}, but its files list {sum(f.rows for f in self.files)} rows")
        if len({f.name for f in self.files}) != len(self.files):
            raise ValueError("a file is listed twice")
        columns = {**CONTRACT_COLUMNS, "image": IMAGE_COLUMN[self.image_encoding]}
        taken = sorted(set(columns) & set(self.label_columns))
        if taken or len(set(self.label_columns)) != len(self.label_columns):
            raise ValueError(f"label_columns {self.label_columns}: " + (
                f"{', '.join(taken)} is the contract's own column, not a label" if taken else "a column is listed twice"))
        for name, type_ in columns.items():
            if self.schema_.get(name) != type_:
                raise ValueError(f"schema: column {name!r} is {self.schema_.get(name)!r}, the contract's is {type_!r} "
                                 f"(image_encoding {self.image_encoding})")
        if set(self.schema_) != {*columns, *self.label_columns}:
            raise ValueError(f"schema columns {sorted(self.schema_)} are not id, image, source and the label columns "
                             f"{self.label_columns}")
        return self


def check_manifest(manifest: dict, where: str) -> None:
    """Raises DatasetError naming the manifest, the key and the problem."""
    try:
        Manifest.model_validate(manifest)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        raise DatasetError(f"{where}: {key + ': ' if key else ''}{message}"
                           + (f" (and {err.error_count() - 1} more problems)" if err.error_count() > 1 else "")) from None
