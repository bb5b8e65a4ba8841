"""render: the task's simulator -> the synthetic dataset (labelled synthetic images)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from refiner import data, plots
from refiner.params import Params
from refiner.tasks import task_for
from stages import common


class Args(common.StageArgs):
    out: Path = Field(description="the synthetic dataset to write (a directory)")
    preview: Path = Field(description="a grid of the first rendered images (PNG)")


def render(params: Params, world, out: Path) -> data.ImageDataset:
    images = world.synthesize(params)
    data.write_dataset(out, images.ids, data.to_uint8(images.pixels), images.labels, label_schema=world.labels,
                       source="synthetic", producer="stages.render", params=common.declared_params("render", params),
                       bad_labels=world.bad_labels, image_encoding=params.image_encoding)
    return data.open_dataset(out)


def run(params: Params, args: Args) -> dict:
    """The stage as DVC and the Prefect flow call it: returns its outputs' digests."""
    import mlflow
    from refiner import tracking
    world = task_for(params)
    with tracking.stage_run("render", common.declared_params("render", params)) as mlflow_run:
        synthetic = render(params, world, args.out)
        tracking.log_dataset(synthetic, "output", "synthetic")
        preview = synthetic.load()["image"][:32]
        mlflow.log_artifact(str(plots.image_grid(args.preview, {"synthetic": preview})))
    print(f"render: {synthetic.num_rows} images -> {args.out} (digest {synthetic.digest[:12]})")
    return {"synthetic": synthetic.digest, "mlflow_run_id": mlflow_run.info.run_id}


def main(argv: list[str] | None = None) -> None:
    common.main(run, Args, __doc__, argv)


if __name__ == "__main__":
    main()
