"""render: the simulator -> data/synthetic (labelled synthetic images)."""

from __future__ import annotations

from pathlib import Path

from refiner import dataset, digits
from refiner.dataset import ImageDataset
from stages import common


def render(num_images: int, seed: int, jitter: dict, out: Path, handwritten_fraction: float = 0.5,
           progress: bool = True) -> ImageDataset:
    ids, images, labels = digits.render_digits(num_images, seed, digits.RenderJitter(**_tuples(jitter)),
                                               handwritten_fraction=handwritten_fraction, progress=progress)
    dataset.write_dataset(out, ids, dataset.to_uint8(digits.counts_to_unit(images)), {"label": labels},
                          source="synthetic", producer="stages.render",
                          params={"num_images": num_images, "seed": seed, "jitter": jitter,
                                  "handwritten_fraction": handwritten_fraction})
    return dataset.open_dataset(out)


def _tuples(jitter: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in jitter.items()}


def run(params: dict) -> dict:
    """The stage as DVC and the Prefect flow call it: returns its outputs' digests."""
    import mlflow
    from refiner import tracking
    section = params["render"]
    with tracking.stage_run("render", {**section, "seed": params["seed"]}) as mlflow_run:
        synthetic = render(section["num_images"], params["seed"], section["jitter"], common.SYNTHETIC,
                           section["handwritten_fraction"])
        tracking.log_dataset(synthetic, "output", "synthetic")
        preview = synthetic.load()["image"][:32]
        mlflow.log_artifact(str(common.image_grid(common.PLOTS / "render" / "synthetic.png", {"synthetic": preview})))
    print(f"render: {synthetic.num_rows} images -> {common.SYNTHETIC} (digest {synthetic.digest[:12]})")
    return {"synthetic": synthetic.digest, "mlflow_run_id": mlflow_run.info.run_id}


def main() -> None:
    run(common.load_params())


if __name__ == "__main__":
    main()
