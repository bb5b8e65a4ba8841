"""A dataset's Hugging Face card, ``.huggingface.yaml``: what ``datasets`` (and the Hub) read.

Its ``configs`` name the part files, so ``datasets.load_dataset(DIR)`` reads the parts and not
the manifest beside them. Its one config is named by the dataset's digest: ``datasets`` caches a
local folder under its base name and its config (not its contents), so a config named
``default`` served one folder's rows for another of the same name, and the old rows after a
rerun rewrote a dataset in place. The features (``ClassLabel`` for a class column that names its
classes, ``Image`` for PNG images) are in each part's schema metadata (``schema.schema_for``).
The standalone YAML rather than a README.md: pyarrow, pandas and Ray skip hidden files when
they read a directory, and would fail on a README. Written from the manifest on commit; the
manifest, not the card, is the contract.
"""

from __future__ import annotations

import yaml

from refiner.data.manifest import manifest_digest

CARD = ".huggingface.yaml"


def dataset_card(manifest: dict) -> str:
    shape = "x".join(map(str, manifest["image_shape"]))
    images = "PNG (an Image feature)" if manifest.get("image_encoding", "png") == "png" else \
        f"raw uint8 pixels, {shape} row-major (numpy.frombuffer(image, 'uint8').reshape({manifest['image_shape']}))"
    about = (f"# A simrefinery dataset of {manifest['num_rows']} {shape} images, {images}; labels "
             f"{', '.join(manifest['label_columns']) or 'none'}; written by {manifest['producer']}.\n"
             "# _manifest.json is the contract: simrefinery validate DIR, simrefinery lineage DIR.\n")
    card = {"configs": [{"config_name": config_name(manifest), "data_files": [{"split": "train", "path": "part-*.parquet"}]}],
            "tags": ["simrefinery"]}
    return about + yaml.safe_dump(card, sort_keys=False)


def config_name(manifest: dict) -> str:
    """The card's config: ``digest-`` and the digest's first 16 hex digits."""
    return f"digest-{manifest_digest(manifest)[:16]}"
