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


def render_gaze(num_images: int, seed: int, section: dict, out: Path) -> ImageDataset:
    """The gaze task's synthetic eyes: the procedural renderer or a UnityEyes export."""
    from refiner.gaze import load_eyes
    ids, images, gaze = load_eyes(section["synthetic"], num_images, seed, section["max_head_pose_deg"])
    if gaze is None:
        raise dataset.DatasetError(f"{section['synthetic']}: synthetic eyes need gaze labels (UnityEyes JSON)")
    dataset.write_dataset(out, ids, dataset.to_uint8(images), {"gaze_pitch": gaze[:, 0], "gaze_yaw": gaze[:, 1]},
                          source="synthetic", producer="stages.render",
                          params={"num_images": num_images, "seed": seed, "gaze": section})
    return dataset.open_dataset(out)


def _tuples(jitter: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in jitter.items()}


def run(params: dict) -> dict:
    """The stage as DVC and the Prefect flow call it: returns its outputs' digests."""
    import mlflow
    from refiner import tracking
    section = params["render"]
    logged = {**section, "seed": params["seed"], "task": params["task"]}
    if params["task"] == "gaze":
        logged["gaze"] = params["gaze"]
    with tracking.stage_run("render", logged) as mlflow_run:
        if params["task"] == "gaze":
            synthetic = render_gaze(section["num_images"], params["seed"], params["gaze"], common.SYNTHETIC)
        else:
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
