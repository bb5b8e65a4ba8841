"""ingest: the task's real images -> the unlabelled pool (no label column at all), the
labelled test split (for evaluate), and the pool's labels where the source has them (only
evaluate declares them, for the oracle reference)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from refiner import data
from refiner.params import Params
from refiner.tasks import task_for
from stages import common


class Args(common.StageArgs):
    pool: Path = Field(description="the unlabelled real pool to write (a dataset directory)")
    test: Path = Field(description="the labelled real test split to write (a dataset directory)")
    pool_labels: Path = Field(description="the pool's labels, where the source has them (Parquet: evaluate's oracle only)")


def write_pool_labels(path: Path, ids, labels: dict | None, label_schema: pa.Schema) -> None:
    """id + label columns; no rows when the pool's source is unlabelled (then no oracle)."""
    columns = {"id": pa.array(list(ids) if labels is not None else [], pa.string())}
    for field in label_schema:
        columns[field.name] = data.label_array(labels[field.name] if labels is not None else [], field.type)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)


def ingest(params: Params, world, unlabeled_out: Path, test_out: Path,
           pool_labels_out: Path) -> tuple[data.ImageDataset, data.ImageDataset | None]:
    pool, test = world.read_real(params)
    declared = common.declared_params("ingest", params)
    data.write_dataset(unlabeled_out, pool.ids, data.to_uint8(pool.pixels), {}, source=data.REAL,
                       producer="stages.ingest", params=declared, image_encoding=params.image_encoding)
    if test is None:
        write_no_test(test_out)
    else:
        data.write_dataset(test_out, test.ids, data.to_uint8(test.pixels), test.labels,
                           label_schema=world.test_labels, source=data.REAL, producer="stages.ingest",
                           params=declared, bad_labels=world.bad_labels, image_encoding=params.image_encoding)
    write_pool_labels(pool_labels_out, pool.ids, pool.labels, world.test_labels)
    return data.open_dataset(unlabeled_out), data.open_dataset(test_out) if test is not None else None


def write_no_test(path: Path) -> None:
    """No labelled real test set: an empty dataset is never committed, so the output says so in words."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / "README.md").write_text("No labelled real test set was given: evaluate reports label-free figures only.\n")


def run(params: Params, args: Args) -> dict:
    from refiner import tracking
    world = task_for(params)
    with tracking.stage_run("ingest", common.declared_params("ingest", params)) as mlflow_run:
        unlabeled, test = ingest(params, world, args.pool, args.test, args.pool_labels)
        tracking.log_dataset(unlabeled, "output", "real-unlabeled")
        if test is not None:
            tracking.log_dataset(test, "output", "real-test")
    print(f"ingest: {unlabeled.num_rows} unlabelled + {test.num_rows if test else 'no'} labelled test real images")
    return {"real-unlabeled": unlabeled.digest, "real-test": test.digest if test else None,
            "mlflow_run_id": mlflow_run.info.run_id}


def main(argv: list[str] | None = None) -> None:
    common.main(run, Args, __doc__, argv)


if __name__ == "__main__":
    main()
