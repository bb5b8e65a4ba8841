"""simrefinery: point the pipeline at your own folders without editing params.yaml.

    simrefinery example examples/shapes      # a generated RGB world to try it on
    simrefinery init --synthetic DIR --labels CSV --real DIR [--test DIR --test-labels CSV] [--fast]
    dvc repro                                # or: make run
    simrefinery lineage data/refined         # where a dataset, run or model came from
    simrefinery refine FRAMES OUT [--refiner models/refiner]   # a trained refiner on new frames
    simrefinery run [--set KEY=VALUE] [--flow]   # the pipeline: dvc repro, an experiment, or Prefect
    simrefinery experiments                  # DVC's experiments side by side, in 120 columns
    simrefinery report | validate DATASET | ui | --version

init reads the labels, infers and prints their kinds and the estimator they choose, and
writes params.yaml's `task: images` and `images` section with the kinds pinned.
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Literal

import tyro
import yaml
from pydantic import BaseModel, Field

from refiner.config import Adaptation, RefineParams
from refiner.errors import Refused
from refiner.simgan import sizing
from refiner.tasks.images import ImagesParams, ImagesWorld

# a first look in minutes on a laptop CPU: a narrower, shallower refiner and half the
# pretraining (the discriminator is sized to the images either way: refiner.simgan.sizing)
FAST = {"train_refiner": {"channels": 16, "num_blocks": 2, "batch_size": 32, "pretrain_refiner_steps": 100,
                          "pretrain_disc_steps": 50},
        "train_estimator": {"steps": 1200, "batch_size": 64}}  # at 400 the shapes estimator was too noisy to show a gain
# a user's camera: its global effects as a learned camera model, judged by a global
# discriminator as well as the local one (refiner/simgan/camera.py). The camera alone, without
# the paper's residual refiner: it moves no pixel, so no label can change. On the shapes example
# it bought +0.72 px and realism 0.59 where the residual beside it bought +0.64 px and 0.996; on
# typeset digits -> MNIST +0.9 points where the residual, conditioned on half-wrong pseudo-labels,
# lost 6.2 (experiments/README.md, session 31). `residual: true` adds it back for local texture.
CAMERA = {"camera": True, "disc_global": 32, "residual": False}
# without classes there is no conditional discriminator (it needs pseudo-classes), and the plain
# one kept labels at the paper's lambda 10 but lost them below 5 (the digits sweep)
NO_CLASSES = {"conditional": False, "lambda": 10.0}
PATHS = ("synthetic", "labels", "real", "test", "test_labels")
try:  # here, not in refiner/__init__.py: every stage imports the package, and its code is each stage's DVC dep
    __version__ = version("simrefinery")
except PackageNotFoundError:  # a checkout on sys.path that was never installed
    __version__ = "0+unknown"


class Init(ImagesParams):
    """Write params.yaml's images task from your folders (the images section's keys, plus these)."""
    adaptation: Adaptation | None = Field(None, description=(
        "the estimator's label-free adaptation (train_estimator.adaptation); unset: the params' for a class "
        "target, none for others"))
    fast: bool = Field(False, description="a small refiner and few steps: a first look in minutes on a CPU")
    color: Literal["rgb", "gray"] | None = Field(None, description=(
        "RGB or 8-bit grayscale through the whole pipeline; unset: gray where both the synthetic and the "
        "real images are grey (one channel, or three equal ones), else rgb"))
    params: Path = Field(Path("params.yaml"), description="the params file to write (its comments are not kept)")

    def run(self) -> None:
        from refiner.params import validate_params
        from refiner.tasks import task_for
        if not (self.synthetic and self.real):
            raise Refused("init: --synthetic and --real are required (simrefinery init --help)")
        raw = yaml.safe_load(self.params.read_text()) if self.params.is_file() else {}
        section = self.model_dump(mode="json", include=set(ImagesParams.model_fields), exclude_none=True)
        section.update({key: _relative(section[key]) for key in PATHS if key in section})
        if self.color is None:
            section["color"] = self.inferred_color()
        raw.update(task=ImagesWorld.name, images=section)
        # the target decides the adaptation and the conditional discriminator: find it with both off
        probe = {**raw, "train_refiner": {**raw.get("train_refiner", {}), **NO_CLASSES},
                 "train_estimator": {**raw.get("train_estimator", {}), "adaptation": "none"}}
        probe_params = validate_params(probe, str(self.params))
        world = task_for(probe_params)
        shape = world.image_shape(probe_params)
        raw["train_refiner"] = {**raw.get("train_refiner", {}), **_jsonable(sizing.sized(shape)), **CAMERA}
        for name, values in (FAST if self.fast else {}).items():
            raw[name] = {**raw.get(name, {}), **values}
        raw["images"]["label_kinds"] = world.kinds
        refiner, estimator = raw.setdefault("train_refiner", {}), raw.setdefault("train_estimator", {})
        head = world.head
        if head is not None and head.has_classes:
            raw["images"]["num_classes"] = head.num_classes
            if self.adaptation:
                estimator["adaptation"] = self.adaptation
        else:
            estimator["adaptation"] = self.adaptation or "none"
            refiner.update(NO_CLASSES)
        params = validate_params(raw, str(self.params))
        task_for(params)
        self.params.write_text(yaml.safe_dump(raw, sort_keys=False))
        print(f"label kinds: {world.kinds}")
        print(_refiner_summary(params.train_refiner, shape))
        learns = "no estimator (label-free figures only)" if head is None else \
            f"{'classifies' if head.has_classes else 'regresses'} {head.columns} ({head.metric.title})"
        print(f"estimator: {learns}")
        print(f"wrote {self.params} (task: images). Next: dvc repro   (or: make run)")

    def inferred_color(self) -> str:
        """gray where the synthetic and the real images are all grey: a grey camera's frames made RGB
        got a colour cast and colour noise the camera never had (realism 1.000 on a grey dial world)."""
        from refiner.tasks.images.readers import images_color
        modes = {name: images_color(Path(getattr(self, name))) for name in ("synthetic", "real")}
        color = "gray" if set(modes.values()) == {"gray"} else "rgb"
        print(f"colour: {color} (synthetic images {modes['synthetic'] or 'unread'}, real {modes['real'] or 'unread'}; "
              "--color sets it)")
        return color


class Example(BaseModel):
    """Generate a sim-to-sim RGB shapes world to try the images task on."""
    out: Annotated[Path, tyro.conf.Positional] = Field(description="folder to write it to")
    num_synthetic: int = Field(2000, gt=0, description="labelled synthetic images")
    num_camera: int = Field(1000, gt=0, description="unlabelled camera images")
    num_test: int = Field(500, gt=0, description="labelled camera test images")
    seed: int = 0

    def run(self) -> None:
        from refiner.tasks.images.example import make_example
        paths = make_example(self.out, self.num_synthetic, self.num_camera, self.num_test, self.seed)
        print(f"wrote {self.out}: {self.num_synthetic} synthetic, {self.num_camera} camera, "
              f"{self.num_test} labelled camera test images")
        print("next: simrefinery init " + " ".join(f"--{k.replace('_', '-')} {_relative(str(v))}"
                                                   for k, v in paths.items()) + " --fast")


class Lineage(BaseModel):
    """Print where a dataset, a run or a model came from, down to params and code version."""
    target: Annotated[str, tyro.conf.Positional] = Field(description=(
        "a dataset directory, a dataset digest (a prefix is enough), a run id or a models:/ URI"))
    root: Path = Field(Path("."), description="project root holding mlflow.db (ignored with MLFLOW_TRACKING_URI)")

    def run(self) -> None:
        import mlflow
        from refiner.tracking import runs
        from refiner.tracking.lineage import Lineage as Walk
        print(Walk(mlflow.MlflowClient(), runs.setup(self.root)).tree(self.target))


class Refine(RefineParams):
    """Refine new frames with a trained refiner, on Ray: a simrefinery dataset (its labels
    carried through), a folder of images or a Parquet / Hugging Face dataset in, a simrefinery
    dataset out; an interrupted run resumes; params.yaml is neither read nor changed (the
    options below are its refine keys)."""
    source: Annotated[str, tyro.conf.Positional] = Field(description=(
        "a simrefinery dataset (a directory or s3://bucket/prefix), a folder of images, or Parquet files with an "
        "`image` column (a Hugging Face dataset's): frames of the refiner's size and colour (see --resize) are "
        "streamed into the unlabelled dataset OUT-input first"))
    out: Annotated[str, tyro.conf.Positional] = Field(description="the refined dataset: a directory or s3://bucket/prefix")
    refiner: str = Field("models/refiner", description=(
        "train_refiner's model directory, its refiner.pt, or a registered refiner from the project's MLflow store, "
        "e.g. models:/simrefinery-refiner@champion"))
    image_encoding: Literal["raw", "png"] = Field("raw", description="how the refined dataset holds its images")
    resize: bool = Field(False, description=(
        "resize frames of another size, and convert those of another colour, to the refiner's (else refused)"))

    def run(self) -> None:
        import torch
        from refiner import data, frames, tracking
        from refiner.simgan.refine_job import refine_dataset
        checkpoint = self.checkpoint()
        digest = data.file_sha256(checkpoint)
        source_name = _relative(self.source)
        params = {"source": source_name, "refiner": self.refiner, "refiner_sha256": digest,
                  "batch_size": self.batch_size, "precision": self.precision, "resize": self.resize}
        try:
            shape = torch.load(checkpoint, map_location="cpu", weights_only=True).get("image_shape")
        except Exception as err:  # torch's advice (weights_only=False) would run the file's code
            raise Refused(f"refine: {checkpoint}: not a refiner checkpoint ({type(err).__name__})") from None
        with tracking.command_run("simrefinery refine", params) as tracked:
            source, written = frames.refine_source(self.source, self.out, shape, self.image_encoding, self.resize,
                                                   checkpoint, folder=source_name)
            if tracked:  # an input first: MLflow keeps a dataset's first context in a run
                tracking.log_dataset(source, "input", "frames")
                if written:  # frames this run streamed into a dataset first
                    tracking.log_dataset(source, "output", "frames")
                tracking.log_model_input(self.refiner if self.refiner.startswith("models:/") else checkpoint.parent)
            refined = refine_dataset(
                source, checkpoint, self.out, producer="simrefinery refine", batch_size=self.batch_size,
                num_actors=self.num_actors, actor_num_cpus=self.actor_num_cpus, precision=self.precision,
                ray_address=self.ray_address, image_encoding=self.image_encoding,
                # the weights, not the name they were given: one digest for one set of pixels
                params={"refiner_sha256": digest},
                upstream={"synthetic": source.digest, "refiner": digest})
            if tracked:
                tracking.log_dataset(refined, "output", "refined")
        print(f"refine: {refined.num_rows} images -> {self.out} (digest {refined.digest[:12]}; refiner {self.refiner}, "
              f"sha256 {digest[:12]})" + ("" if tracked else "; no MLflow store here (mlflow.db): not logged"))

    def checkpoint(self) -> Path:
        """The refiner.pt to run: a path, or the one logged beside a registered model."""
        if not self.refiner.startswith("models:/"):
            path = Path(self.refiner)
            checkpoint = path / "refiner.pt" if path.is_dir() else path
            if not checkpoint.is_file():
                raise Refused(f"refine: {checkpoint}: no refiner checkpoint (train one: dvc repro train_refiner)")
            return checkpoint
        import mlflow
        from mlflow.exceptions import MlflowException
        from refiner.tracking import runs
        runs.use_store(Path("."))
        try:
            model = Path(mlflow.artifacts.download_artifacts(artifact_uri=self.refiner))
        except MlflowException as err:
            raise Refused(f"refine: {self.refiner}: {err.message.splitlines()[0]}") from None
        checkpoint = model / "extra_files" / "refiner.pt"
        if not checkpoint.is_file():
            raise Refused(f"refine: {self.refiner}: the model holds no refiner.pt (not a simrefinery refiner, or "
                          "registered before refiners carried their checkpoint)")
        return checkpoint


class Run(BaseModel):
    """Run the pipeline: `dvc repro` (only what changed reruns), with --set a DVC experiment
    (`dvc exp run -S`), with --flow the Prefect flow; then print the evaluation table."""
    set: list[str] = Field(default_factory=list, description="KEY=VALUE params overrides, e.g. train_refiner.lambda=0.5")
    flow: bool = Field(False, description="run it as the Prefect flow (flows/pipeline.py) instead of through DVC")
    force: bool = Field(False, description="rerun every stage, whatever the cache says")

    def run(self) -> None:
        import os
        import subprocess
        from datetime import datetime, timezone
        from refiner.tracking import PIPELINE_ID_ENV
        force = ["--force"] if self.force else []
        if self.flow:  # a process of its own: the library imports no flow (the flow prints the table)
            sys.exit(subprocess.call([sys.executable, "-m", "flows.pipeline", *(["--set", *self.set] if self.set else []),
                                      *force]))
        command = ["dvc", "exp", "run", *[arg for kv in self.set for arg in ("-S", kv)]] if self.set else ["dvc", "repro"]
        # one MLflow parent run groups the stages of this invocation
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        env = {**os.environ, PIPELINE_ID_ENV: os.environ.get(PIPELINE_ID_ENV, f"run-{stamp}")}
        table = Path("metrics/eval.md")
        before = table.stat().st_mtime_ns if table.is_file() else None
        code = subprocess.call([*command, *force], env=env)
        if code:
            sys.exit(code)
        if not table.is_file() or table.stat().st_mtime_ns == before:  # else evaluate just printed it
            Report().run()


class Report(BaseModel):
    """Print the current run's evaluation table (metrics/eval.md; the figures: metrics/eval.json)."""
    root: Path = Field(Path("."), description="the project root")

    def run(self) -> None:
        table = self.root / "metrics" / "eval.md"
        if not table.is_file():
            raise Refused(f"report: {table}: no evaluation yet (simrefinery run)")
        print(table.read_text(), end="")


class Experiments(BaseModel):
    """DVC's experiments side by side: the headline figures and the params each changed
    (`dvc exp show` gives all 121 params and deps a column)."""

    def run(self) -> None:
        from refiner.experiment_table import dvc_experiments, side_by_side
        try:
            print(side_by_side(dvc_experiments()))
        except RuntimeError as err:
            raise Refused(str(err)) from None


class Validate(BaseModel):
    """Check a dataset against the contract (manifest, file digests, schema, labels) and summarise it."""
    dataset: Annotated[str, tyro.conf.Positional] = Field(description="a dataset directory or s3://bucket/prefix")

    def run(self) -> None:
        from refiner import data
        dataset = data.validate(self.dataset)
        manifest = dataset.manifest
        print(f"{self.dataset}: valid, {dataset.num_rows} rows in {len(dataset.files)} files, "
              f"{data.shape_text(manifest['image_shape'])} images ({manifest.get('image_encoding', 'png')}), "
              f"labels {dataset.label_columns or 'none'}, digest {dataset.digest[:12]}")


class Ui(BaseModel):
    """The MLflow UI on the project's store, on 127.0.0.1 only."""
    port: int = Field(5000, description="http://127.0.0.1:PORT")
    root: Path = Field(Path("."), description="project root holding mlflow.db")

    def run(self) -> None:
        import os
        from refiner.tracking import runs
        runs.setup(self.root)  # a copied project's store is pointed at its own artifacts first
        store = f"sqlite:///{(self.root / 'mlflow.db').resolve()}"
        os.execvp(sys.executable, [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store,
                                   "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"])


COMMANDS = {"run": Run, "init": Init, "example": Example, "refine": Refine, "report": Report,
            "experiments": Experiments, "validate": Validate, "lineage": Lineage, "ui": Ui}


def _refiner_summary(config, shape) -> str:
    patch = sizing.receptive_field(config.disc_layers)
    minutes = sizing.training_minutes(config, shape)
    residual = f"{config.channels} channels x {config.num_blocks} blocks" if config.residual else "no residual refiner"
    return (f"refiner: {residual}, camera model "
            f"{'on' if config.camera else 'off'}; local discriminator patch {patch}x{patch} of "
            f"{shape[0]}x{shape[1]}{', global discriminator on' if config.disc_global else ''}; {config.steps} rounds, "
            f"about {minutes:.0f} min of training on this machine's CPU (timed over 3 rounds). {sizing.CPU_NOTE}")


def _jsonable(values: dict) -> dict:
    return {key: [list(layer) for layer in value] if key == "disc_layers" else value for key, value in values.items()}


def _relative(path: str | None) -> str | None:
    """Paths inside the project stay relative, so the params work in any clone (a URI as it is)."""
    if path is None or "://" in path:
        return path
    resolved = Path(path).resolve()
    try:
        return resolved.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(resolved)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["--version"], ["-V"]):
        print(f"simrefinery {__version__}")
        return
    command = tyro.extras.subcommand_cli_from_dict(COMMANDS, prog="simrefinery", description=__doc__, args=argv)
    try:
        command.run()
    except Refused as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
