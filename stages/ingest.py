"""ingest: real images -> data/real/unlabeled (no label column at all) + data/real/test.

Digits: scikit-learn's real digits, split stratified and seeded. Gaze: ``gaze.real`` (the
renderer's camera profile, MPIIGaze, or a folder), split seeded. Only ``evaluate`` ever
reads real labels.
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


def ingest_gaze(section: dict, test_fraction: float, seed: int, unlabeled_out: Path,
                test_out: Path) -> tuple[ImageDataset, ImageDataset]:
    """Real eyes: split one labelled source into pool and test, or, when ``gaze.test`` names
    a labelled source, use all of ``gaze.real`` (labelled or not) as the pool."""
    from refiner.gaze import load_eyes
    ids, images, gaze = load_eyes(section["real"], section["num_real"], seed, section["max_head_pose_deg"])
    if section.get("test"):
        pool = np.arange(len(ids))
        test_ids, test_images, test_gaze = load_eyes(section["test"], section["num_real"], seed + 1,
                                                     section["max_head_pose_deg"])
    else:
        order = np.random.default_rng(seed).permutation(len(ids))
        n_test = int(round(len(ids) * test_fraction))
        pool, test = np.sort(order[n_test:]), np.sort(order[:n_test])
        test_ids, test_images, test_gaze = ids[test], images[test], None if gaze is None else gaze[test]
    if test_gaze is None:
        raise dataset.DatasetError(f"{section.get('test') or section['real']}: the real test split needs gaze "
                                   "labels: set gaze.test to 'camera' or an MPIIGaze root")
    params = {"test_fraction": test_fraction, "seed": seed, "gaze": section}
    dataset.write_dataset(unlabeled_out, ids[pool], dataset.to_uint8(images[pool]), {}, source="real",
                          producer="stages.ingest", params=params)
    dataset.write_dataset(test_out, test_ids, dataset.to_uint8(test_images),
                          {"gaze_pitch": test_gaze[:, 0], "gaze_yaw": test_gaze[:, 1]}, source="real",
                          producer="stages.ingest", params=params)
    return dataset.open_dataset(unlabeled_out), dataset.open_dataset(test_out)


def pool_labels(pool_ids: np.ndarray, params: dict | None = None) -> np.ndarray:
    """Labels of the unlabelled pool, looked up at the source: for the oracle reference in
    ``evaluate`` only. No other stage may call this. ``params`` names the gaze source; without
    it, the digits."""
    if params is not None and params["task"] == "gaze":
        from refiner.gaze import load_eyes
        section = params["gaze"]
        ids, _, labels = load_eyes(section["real"], section["num_real"], params["seed"], section["max_head_pose_deg"])
        if labels is None:
            raise dataset.DatasetError(f"{section['real']}: unlabelled, so no oracle: set evaluate.oracle=false")
    else:
        ids, _, labels = digits.load_real_digits()
    by_id = dict(zip(ids, labels))
    return np.array([by_id[i] for i in pool_ids])


def run(params: dict) -> dict:
    from refiner import tracking
    section = {**params["ingest"], "seed": params["seed"], "task": params["task"]}
    with tracking.stage_run("ingest", section) as mlflow_run:
        if params["task"] == "gaze":
            unlabeled, test = ingest_gaze(params["gaze"], section["test_fraction"], section["seed"],
                                          common.REAL_UNLABELED, common.REAL_TEST)
        else:
            unlabeled, test = ingest(section["test_fraction"], section["seed"], common.REAL_UNLABELED,
                                     common.REAL_TEST)
        tracking.log_dataset(unlabeled, "output", "real-unlabeled")
        tracking.log_dataset(test, "output", "real-test")
    print(f"ingest: {unlabeled.num_rows} unlabelled + {test.num_rows} labelled test real images")
    return {"real-unlabeled": unlabeled.digest, "real-test": test.digest, "mlflow_run_id": mlflow_run.info.run_id}


def main() -> None:
    run(common.load_params())


if __name__ == "__main__":
    main()
