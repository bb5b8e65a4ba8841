"""ingest: real digits -> data/real/unlabeled (no label column at all) + data/real/test.

The split is stratified and seeded. Only ``evaluate`` ever reads real labels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from refiner import dataset, digits
from refiner.dataset import ImageDataset
from stages import common


def split_real(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of (unlabelled pool, labelled test), stratified by class."""
    index = np.arange(len(labels))
    pool, test = train_test_split(index, test_size=test_fraction, stratify=labels, random_state=seed)
    return np.sort(pool), np.sort(test)


def ingest(test_fraction: float, seed: int, unlabeled_out: Path, test_out: Path) -> tuple[ImageDataset, ImageDataset]:
    ids, images, labels = digits.load_real_digits()
    pool, test = split_real(labels, test_fraction, seed)
    pixels = dataset.to_uint8(digits.counts_to_unit(images))
    params = {"test_fraction": test_fraction, "seed": seed, "source": "sklearn.datasets.load_digits"}
    dataset.write_dataset(unlabeled_out, ids[pool], pixels[pool], {}, source="real",
                          producer="stages.ingest", params=params)
    dataset.write_dataset(test_out, ids[test], pixels[test], {"label": labels[test]}, source="real",
                          producer="stages.ingest", params=params)
    return dataset.open_dataset(unlabeled_out), dataset.open_dataset(test_out)


def pool_labels(pool_ids: np.ndarray) -> np.ndarray:
    """Labels of the unlabelled pool, looked up at the source: for the oracle reference in
    ``evaluate`` only. No other stage may call this."""
    ids, _, labels = digits.load_real_digits()
    by_id = dict(zip(ids, labels))
    return np.array([by_id[i] for i in pool_ids], dtype=np.int64)


def run(params: dict) -> dict:
    from refiner import tracking
    section = {**params["ingest"], "seed": params["seed"]}
    with tracking.stage_run("ingest", section) as mlflow_run:
        unlabeled, test = ingest(section["test_fraction"], section["seed"], common.REAL_UNLABELED, common.REAL_TEST)
        tracking.log_dataset(unlabeled, "output", "real-unlabeled")
        tracking.log_dataset(test, "output", "real-test")
    print(f"ingest: {unlabeled.num_rows} unlabelled + {test.num_rows} labelled test real images")
    return {"real-unlabeled": unlabeled.digest, "real-test": test.digest, "mlflow_run_id": mlflow_run.info.run_id}


def main() -> None:
    run(common.load_params())


if __name__ == "__main__":
    main()
