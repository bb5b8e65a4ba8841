"""render: the task's simulator -> data/synthetic (labelled synthetic images)."""

from __future__ import annotations

from pathlib import Path

from refiner import dataset, plots
from refiner.dataset import ImageDataset
from refiner.params import Params
from refiner.tasks import task_for
from stages import common


def render(params: Params, out: Path) -> ImageDataset:
    task = task_for(params)
    images = task.synthesize(params)
    dataset.write_dataset(out, images.ids, dataset.to_uint8(images.pixels), images.labels, label_schema=task.labels,
                          source="synthetic", producer="stages.render", params=common.declared_params("render", params),
                          bad_labels=task.bad_labels, image_encoding=params.image_encoding)
    return dataset.open_dataset(out)


def run(params: Params) -> dict:
    """The stage as DVC and the Prefect flow call it: returns its outputs' digests."""
    import mlflow
    from refiner import tracking
    with tracking.stage_run("render", common.declared_params("render", params)) as mlflow_run:
        synthetic = render(params, common.SYNTHETIC)
        tracking.log_dataset(synthetic, "output", "synthetic")
        preview = synthetic.load()["image"][:32]
        mlflow.log_artifact(str(plots.image_grid(common.PLOTS / "render" / "synthetic.png", {"synthetic": preview})))
    print(f"render: {synthetic.num_rows} images -> {common.SYNTHETIC} (digest {synthetic.digest[:12]})")
    return {"synthetic": synthetic.digest, "mlflow_run_id": mlflow_run.info.run_id}


def main() -> None:
    common.main(run)


if __name__ == "__main__":
    main()
