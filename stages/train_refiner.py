"""train_refiner: synthetic + real/unlabeled -> models/refiner (+ loss curves, sample grids)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from refiner import dataset, plots
from refiner.config import EstimatorParams, SimGANParams
from refiner.estimator import balanced_pseudo_labels, predict, semantic_loss, train_model
from refiner.params import Params
from refiner.simgan import COLLAPSE_RATIO, SimGANTrainer, to_model
from refiner.tasks import task_for
from stages import common

SAMPLES = 16
MIN_IMAGES = SAMPLES  # of each input: the sample grid shows 16 of each, and a GAN on fewer is no refiner
FROZEN_SEED_OFFSET = 10_000  # the semantic term's estimator: a seed apart from the evaluated ones


def train_refiner(synthetic: np.ndarray, real: np.ndarray, config: SimGANParams, seed: int, out_dir: Path,
                  plots_dir: Path, progress: bool = True, on_samples=None, semantic=None,
                  classes=None) -> tuple[SimGANTrainer, list[dict]]:
    """Float images in [0, 1] in, the checkpoint, loss curves and a sample grid out.
    ``semantic``: the task-consistency loss (``refiner.estimator.semantic_loss``) or None;
    ``classes``: the conditional discriminator's (``conditioning``) or None."""
    trainer = SimGANTrainer(synthetic, real, config, seed, semantic=semantic, classes=classes)
    fixed = np.random.default_rng(seed).choice(len(synthetic), SAMPLES, replace=False)
    fixed_real = real[np.random.default_rng(seed).choice(len(real), SAMPLES, replace=False)]

    def sample_grid(step: int, trainer: SimGANTrainer, path: Path) -> Path:
        rows = {"synthetic": synthetic[fixed], "refined": trainer.refine(synthetic[fixed]), "real": fixed_real}
        return plots.image_grid(path, rows, columns=SAMPLES, title=f"step {step}")

    def on_checkpoint(step: int, trainer: SimGANTrainer) -> None:
        if on_samples and (step % (config.log_every * 8) == 0 or step == config.steps):
            with tempfile.TemporaryDirectory() as tmp:
                on_samples(sample_grid(step, trainer, Path(tmp) / f"samples-step{step:05d}.png"))

    log = trainer.train(progress=progress, on_checkpoint=on_checkpoint)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(trainer.checkpoint(synthetic.shape[1:]), out_dir / "refiner.pt")
    curves = [content_only(e) for e in log if e["phase"] == "adversarial"]
    common.write_csv(plots_dir / "losses.csv", curves)
    sample_grid(config.steps, trainer, plots_dir / "samples.png")
    return trainer, log


def content_only(entry: dict) -> dict:
    """A log entry without its phase and wall-clock seconds: what goes into DVC's outputs
    depends on the weights only, so a retrain that reproduces them changes nothing (the
    seconds go to MLflow)."""
    return {k: v for k, v in entry.items() if k not in ("phase", "seconds")}


def frozen_estimator(params: Params, synthetic: dict, progress: bool = True):
    """The frozen estimator that the semantic term asks and the conditional discriminator's
    pseudo-labels come from, trained on the synthetic images (never on real ones), or None
    when neither is on. Its seed is one no evaluated estimator uses: evaluate's label-kept
    check then asks other networks than the one the refiner learnt to satisfy."""
    config = params.train_refiner
    if not (config.semantic_weight or config.conditional):
        return None
    task = task_for(params)
    recipe = EstimatorParams(steps=config.semantic_steps, self_training_rounds=0)
    estimator, history = train_model(task, synthetic["image"], task.targets(synthetic), recipe,
                                     params.seed + FROZEN_SEED_OFFSET, progress)
    print(f"train_refiner: frozen {task.name} estimator, held-out synthetic "
          f"{task.metric.name} {history[-1][f'val_{task.metric.name}']:.3f}")
    return estimator


def conditioning(params: Params, estimator, synthetic: dict, real01: np.ndarray):
    """(synthetic classes, real-pool pseudo-classes balanced to the synthetic shares, number of
    classes) for the conditional discriminator, or None when it is off."""
    if not params.train_refiner.conditional:
        return None
    task = task_for(params)
    synthetic_classes = task.targets(synthetic)
    prior = np.bincount(synthetic_classes, minlength=task.num_classes)
    real_classes = balanced_pseudo_labels(predict(task, estimator, real01), prior)
    print(f"train_refiner: real-pool pseudo-classes per class {np.bincount(real_classes, minlength=task.num_classes).tolist()}")
    return synthetic_classes, real_classes, task.num_classes


def run(params: Params) -> dict:
    import mlflow
    from refiner import tracking
    config, task = params.train_refiner, task_for(params)
    plots_dir = common.PLOTS / "refiner"
    with tracking.stage_run("train_refiner", common.declared_params("train_refiner", params)) as mlflow_run:
        inputs = {"synthetic": dataset.open_training_set(common.SYNTHETIC, task.labels, task.bad_labels),
                  "real-unlabeled": dataset.open_unlabeled(common.REAL_UNLABELED)}
        for name, data in inputs.items():
            if data.num_rows < MIN_IMAGES:
                raise dataset.DatasetError(f"{data.path}: {data.num_rows} images; the refiner needs at least {MIN_IMAGES}")
            tracking.log_dataset(data, "input", name)
        shapes = {name: data.manifest["image_shape"] for name, data in inputs.items()}
        if shapes["synthetic"] != shapes["real-unlabeled"]:
            raise dataset.DatasetError(f"{common.SYNTHETIC} holds {dataset.shape_text(shapes['synthetic'])} images, "
                                       f"{common.REAL_UNLABELED} {dataset.shape_text(shapes['real-unlabeled'])}: the "
                                       "refiner needs one size and colour mode (the task's params set them)")
        synthetic, real = inputs["synthetic"].load(), inputs["real-unlabeled"].load()["image"]
        estimator = frozen_estimator(params, synthetic)
        semantic = semantic_loss(task, estimator, task.targets(synthetic)) if config.semantic_weight else None
        trainer, log = train_refiner(synthetic["image"], real, config, params.seed, common.REFINER_DIR, plots_dir,
                                     on_samples=lambda p: mlflow.log_artifact(str(p), "samples"),
                                     semantic=semantic, classes=conditioning(params, estimator, synthetic, real))
        for entry in log:
            if entry["phase"] == "adversarial":
                mlflow.log_metrics({k: v for k, v in entry.items() if k not in ("phase", "step")}, step=entry["step"])
        final = content_only(log[-1])
        if final["diversity_ratio"] < COLLAPSE_RATIO:
            mlflow.set_tag("simrefinery.mode_collapse", "true")
            print(f"WARNING train_refiner: refined outputs keep {final['diversity_ratio']:.0%} of the synthetic "
                  f"inputs' spread: mode collapse (raise lambda or lower lr)")
        common.write_json(common.METRICS / "refiner.json", final)
        example = to_model(trainer.probe[:2]).numpy()  # already in memory, in the refiner's range
        tracking.log_model(trainer.refiner.cpu().eval(), "refiner", tracking.REFINER_MODEL, example,
                           {name: data.digest for name, data in inputs.items()}, common.REFINER_DIR,
                           params={"lambda": config.lam, "steps": config.steps, "channels": config.channels})
        mlflow.log_artifact(str(plots_dir / "samples.png"))
        mlflow.log_artifact(str(plots_dir / "losses.csv"))
    print(f"train_refiner: {config.steps} steps, final {final}")
    return {"refiner": dataset.file_sha256(common.REFINER_CHECKPOINT), "mlflow_run_id": mlflow_run.info.run_id}


def main() -> None:
    common.main(run)


if __name__ == "__main__":
    main()
