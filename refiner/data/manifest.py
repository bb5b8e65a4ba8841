"""The manifest: ``_manifest.json`` beside the parts (row count, file hashes, schema,
producer, params, upstream digests). A dataset's digest is the SHA-256 of its canonical
manifest, so DVC, MLflow and Prefect all name the same bytes the same way."""

from __future__ import annotations

import hashlib
import json

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

