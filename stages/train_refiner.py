"""train_refiner: synthetic + the unlabelled real pool -> the refiner's model directory (+ its
final figures, loss curves and a sample grid synthetic | refined | real)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from refiner import data, plots
from refiner.config import SimGANParams
from refiner.params import Params
from refiner.simgan.camera import describe
from refiner.simgan.conditioning import frozen_estimator, pool_classes, semantic_loss
from refiner.simgan.sizing import receptive_field
from refiner.simgan.trainer import CHANCE_ACCURACY, COLLAPSE_RATIO, SimGANTrainer, Uint8Refiner, discriminator_at_chance
from refiner.tasks import task_for
from stages import common

SAMPLES = 16
MIN_IMAGES = SAMPLES  # of each input: the sample grid shows 16 of each, and a GAN on fewer is no refiner


class Args(common.StageArgs):
    synthetic: Path = Field(description="the synthetic dataset")
    pool: Path = Field(description="the unlabelled real pool")
    out: Path = Field(description="the refiner's model directory to write (refiner.pt)")
    metrics: Path = Field(description="the final training figures (JSON)")
    losses: Path = Field(description="the loss curves (CSV)")
    samples: Path = Field(description="the sample grid synthetic | refined | real (PNG)")


def train_refiner(synthetic: np.ndarray, real: np.ndarray, config: SimGANParams, seed: int, out_dir: Path,
                  losses: Path, samples: Path, progress: bool = True, on_samples=None, semantic=None,
                  classes=None, captions: list[str] | None = None) -> tuple[SimGANTrainer, list[dict]]:
    """Float images in [0, 1] in, the checkpoint, loss curves and a sample grid out.
    ``semantic``: the task-consistency loss (``refiner.simgan.conditioning.semantic_loss``) or
    None; ``classes``: the conditional discriminator's (``pool_classes``) or None; ``captions``: each
    synthetic image's label in words, written under it and its refined image in the sample grid."""
    trainer = SimGANTrainer(synthetic, real, config, seed, semantic=semantic, classes=classes)
    fixed = np.random.default_rng(seed).choice(len(synthetic), SAMPLES, replace=False)
    fixed_real = real[np.random.default_rng(seed).choice(len(real), SAMPLES, replace=False)]

    def sample_grid(step: int, trainer: SimGANTrainer, path: Path) -> Path:
        rows = {"synthetic": synthetic[fixed], "refined": trainer.refine(synthetic[fixed]), "real": fixed_real}
        labels = {name: [captions[i] for i in fixed] for name in ("synthetic", "refined")} if captions else None
        return plots.image_grid(path, rows, columns=SAMPLES, title=f"step {step}", captions=labels)

    def on_checkpoint(step: int, trainer: SimGANTrainer) -> None:
        if on_samples and (step % (config.log_every * 8) == 0 or step == config.steps):
            with tempfile.TemporaryDirectory() as tmp:
                on_samples(sample_grid(step, trainer, Path(tmp) / f"samples-step{step:05d}.png"))

    log = trainer.train(progress=progress, on_checkpoint=on_checkpoint)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(trainer.checkpoint(synthetic.shape[1:]), out_dir / "refiner.pt")
    common.write_csv(losses, [content_only(e) for e in log if e["phase"] == "adversarial"])
    sample_grid(config.steps, trainer, samples)
    return trainer, log


def content_only(entry: dict) -> dict:
    """A log entry without its phase and wall-clock seconds: what goes into DVC's outputs
    depends on the weights only, so a retrain that reproduces them changes nothing (the
    seconds go to MLflow)."""
    return {k: v for k, v in entry.items() if k not in ("phase", "seconds")}


def open_inputs(world, args: Args) -> dict[str, data.ImageDataset]:
    """Both inputs, validated, with enough images and one size and colour mode."""
    inputs = {"synthetic": data.open_training_set(args.synthetic, world.labels, world.bad_labels),
              "real-unlabeled": data.open_unlabeled(args.pool)}
    for dataset in inputs.values():
        if dataset.num_rows < MIN_IMAGES:
            raise data.DatasetError(f"{dataset.path}: {dataset.num_rows} images; the refiner needs at least {MIN_IMAGES}")
    shapes = {name: dataset.manifest["image_shape"] for name, dataset in inputs.items()}
    if shapes["synthetic"] != shapes["real-unlabeled"]:
        raise data.DatasetError(f"{args.synthetic} holds {data.shape_text(shapes['synthetic'])} images, "
                                f"{args.pool} {data.shape_text(shapes['real-unlabeled'])}: the "
                                "refiner needs one size and colour mode (the task's params set them)")
    return inputs


def run(params: Params, args: Args) -> dict:
    """Trains in staging; the model, its MLflow record, metrics, curves and samples are then
    committed together (``common.committed``)."""
    from refiner import tracking
    targets = [args.metrics, args.losses, args.samples, tracking.model_record(args.out), args.out]
    with common.committed(targets) as staged:
        return train(params, args.model_copy(update={name: staged[getattr(args, name)]
                                                     for name in ("out", "metrics", "losses", "samples")}))


def train(params: Params, args: Args) -> dict:
    import mlflow
    from refiner import tracking
    config, world = params.train_refiner, task_for(params)
    with tracking.stage_run("train_refiner", common.declared_params("train_refiner", params)) as mlflow_run:
        inputs = open_inputs(world, args)
        for name, dataset in inputs.items():
            tracking.log_dataset(dataset, "input", name)
        synthetic, real = inputs["synthetic"].load(), inputs["real-unlabeled"].load()["image"]
        targets = world.head.targets(synthetic) if world.head is not None else None
        estimator = frozen_estimator(world, config, synthetic["image"], targets, params.seed)
        semantic = semantic_loss(world.head, estimator, targets) if config.semantic_weight else None
        trainer, log = train_refiner(synthetic["image"], real, config, params.seed, args.out, args.losses, args.samples,
                                     on_samples=lambda p: mlflow.log_artifact(str(p), "samples"),
                                     semantic=semantic, classes=pool_classes(world, config, estimator, targets, real),
                                     captions=[str(t) for t in targets] if world.head and world.head.has_classes else None)
        for entry in log:
            if entry["phase"] == "adversarial":
                mlflow.log_metrics({k: v for k, v in entry.items() if k not in ("phase", "step")}, step=entry["step"])
        final = content_only(log[-1])
        if final["diversity_ratio"] < COLLAPSE_RATIO:
            mlflow.set_tag("simrefinery.mode_collapse", "true")
            print(f"WARNING train_refiner: refined outputs keep {final['diversity_ratio']:.0%} of the synthetic "
                  f"inputs' spread: mode collapse (raise lambda or lower lr)")
        if discriminator_at_chance(log):
            mlflow.set_tag("simrefinery.discriminator_at_chance", "true")
            print(f"WARNING train_refiner: the discriminator stayed at chance the whole run (accuracy under "
                  f"{CHANCE_ACCURACY:.0%}): the refiner learnt nothing from it. Its patch is "
                  f"{receptive_field(config.disc_layers)} px wide on {data.shape_text(list(synthetic['image'].shape[1:]))} "
                  f"images: `simrefinery init` sizes it, or see refiner/simgan/sizing.py")
        if config.camera:
            settings = {key.removeprefix("camera_"): value for key, value in trainer.camera_settings().items()}
            mlflow.set_tag("simrefinery.camera", describe(settings))
            if "jpeg_quality" in settings:
                print("train_refiner: the real frames are JPEG-coded; their qualities, read off their 8x8 DCT "
                      "coefficients, code the refined images")
            elif config.jpeg:
                print("train_refiner: the real frames show no JPEG coding on their 8x8 grid (or only at quality 85 "
                      "and up): the camera model codes none")
            print(f"train_refiner: {describe(settings)}")
        common.write_json(args.metrics, final)
        example = data.to_uint8(trainer.probe[:2])  # uint8, as the datasets hold images
        tracking.log_model(Uint8Refiner(trainer.refiner.cpu().eval()), "refiner", tracking.REFINER_MODEL, example,
                           {name: dataset.digest for name, dataset in inputs.items()}, args.out,
                           params={"lambda": config.lam, "steps": config.steps, "channels": config.channels},
                           extra_files=[args.out / "refiner.pt"])  # what `simrefinery refine --refiner models:/...` runs
        mlflow.log_artifact(str(args.samples))
        mlflow.log_artifact(str(args.losses))
    print(f"train_refiner: {config.steps} steps, final {final}")
    return {"refiner": data.file_sha256(args.out / "refiner.pt"), "mlflow_run_id": mlflow_run.info.run_id}


def main(argv: list[str] | None = None) -> None:
    common.main(run, Args, __doc__, argv)


if __name__ == "__main__":
    main()
