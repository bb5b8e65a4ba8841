"""ingest: the task's real images -> data/real/unlabeled (no label column at all),
data/real/test (labelled, for evaluate), and data/real/pool_labels.parquet (the pool's labels
where the source has them: only evaluate declares it, for the oracle reference)."""

from __future__ import annotations

from pathlib import Path

import shutil

import pyarrow as pa
import pyarrow.parquet as pq

from refiner import dataset
from refiner.dataset import ImageDataset
from refiner.params import Params
from refiner.tasks import task_for
from stages import common


def write_pool_labels(path: Path, ids, labels: dict | None, label_schema: pa.Schema) -> None:
    """id + label columns; no rows when the pool's source is unlabelled (then no oracle)."""
    columns = {"id": pa.array(list(ids) if labels is not None else [], pa.string())}
    for field in label_schema:
        columns[field.name] = dataset.label_array(labels[field.name] if labels is not None else [], field.type)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)


def ingest(params: Params, unlabeled_out: Path, test_out: Path,
           pool_labels_out: Path) -> tuple[ImageDataset, ImageDataset | None]:
    task = task_for(params)
    pool, test = task.read_real(params)
    declared = common.declared_params("ingest", params)
    dataset.write_dataset(unlabeled_out, pool.ids, dataset.to_uint8(pool.pixels), {}, source="real",
                          producer="stages.ingest", params=declared, image_encoding=params.image_encoding)
    if test is None:
        write_no_test(test_out)
    else:
        dataset.write_dataset(test_out, test.ids, dataset.to_uint8(test.pixels), test.labels,
                              label_schema=task.test_labels, source="real", producer="stages.ingest",
                              params=declared, bad_labels=task.bad_labels, image_encoding=params.image_encoding)
    write_pool_labels(pool_labels_out, pool.ids, pool.labels, task.test_labels)
    return dataset.open_dataset(unlabeled_out), dataset.open_dataset(test_out) if test is not None else None


def write_no_test(path: Path) -> None:
    """No labelled real test set: an empty dataset is never committed, so the output says so in words."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / "README.md").write_text("No labelled real test set was given: evaluate reports label-free figures only.\n")


def run(params: Params) -> dict:
    from refiner import tracking
    with tracking.stage_run("ingest", common.declared_params("ingest", params)) as mlflow_run:
        unlabeled, test = ingest(params, common.REAL_UNLABELED, common.REAL_TEST, common.POOL_LABELS)
        tracking.log_dataset(unlabeled, "output", "real-unlabeled")
        if test is not None:
            tracking.log_dataset(test, "output", "real-test")
    print(f"ingest: {unlabeled.num_rows} unlabelled + {test.num_rows if test else 'no'} labelled test real images")
    return {"real-unlabeled": unlabeled.digest, "real-test": test.digest if test else None,
            "mlflow_run_id": mlflow_run.info.run_id}


def main() -> None:
    common.main(run)


if __name__ == "__main__":
    main()
