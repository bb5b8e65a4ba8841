"""``simrefinery``: point the pipeline at your own folders without editing params.yaml.

    simrefinery example examples/shapes          # a generated RGB world to try it on
    simrefinery init --synthetic examples/shapes/synthetic/images \\
        --labels examples/shapes/synthetic/labels.csv --real examples/shapes/camera \\
        --test examples/shapes/camera_test/images --test-labels examples/shapes/camera_test/labels.csv --fast
    dvc repro                                    # or: make run

``init`` reads the labels, infers and prints their kinds and the estimator they choose, and
writes params.yaml's ``task: images`` and ``images`` section with the kinds pinned.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from refiner.config import ParamsError
from refiner.dataset import DatasetError

# a first look in minutes on a laptop CPU: a narrower, shallower refiner, a strided
# discriminator (a tenth of the default's work on 64x64 images; it sees 11x11 patches) and fewer steps
FAST = {"train_refiner": {"channels": 16, "num_blocks": 2, "batch_size": 32, "pretrain_refiner_steps": 100,
                          "pretrain_disc_steps": 50, "steps": 150, "disc_layers": [[32, 2], [64, 2], [64, 1]]},
        "train_estimator": {"steps": 400, "batch_size": 64}}
# without classes there is no conditional discriminator (it needs pseudo-classes), and the plain
# one kept labels at the paper's lambda 10 but lost them below 5 (the digits sweep)
NO_CLASSES = {"conditional": False, "lambda": 10.0}


def _relative(path: str | None) -> str | None:
    """Paths inside the project stay relative, so the params work in any clone."""
    if path is None:
        return None
    resolved = Path(path).resolve()
    try:
        return resolved.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(resolved)


def init(args: argparse.Namespace) -> None:
    from refiner.params import validate_params
    from refiner.tasks import task_for
    params_file = Path(args.params)
    raw = yaml.safe_load(params_file.read_text()) if params_file.is_file() else {}
    section = {"synthetic": _relative(args.synthetic), "labels": _relative(args.labels), "real": _relative(args.real),
               "test": _relative(args.test), "test_labels": _relative(args.test_labels), "key": args.key,
               "size": args.size, "fit": args.fit, "color": args.color, "target": args.target}
    raw.update(task="images", images={k: v for k, v in section.items() if v is not None})
    for name, values in (FAST if args.fast else {}).items():
        raw[name] = {**raw.get(name, {}), **values}
    # the target decides self-training and the conditional discriminator: find it with both off
    probe = {**raw, "train_refiner": {**raw.get("train_refiner", {}), **NO_CLASSES},
             "train_estimator": {**raw.get("train_estimator", {}), "self_training_rounds": 0}}
    task = task_for(validate_params(probe, str(params_file)))
    raw["images"]["label_kinds"] = task.kinds
    refiner, estimator = raw.setdefault("train_refiner", {}), raw.setdefault("train_estimator", {})
    if task.can_pseudo_label:
        raw["images"]["num_classes"] = task.num_classes
        estimator["self_training_rounds"] = args.self_training_rounds
    else:
        estimator["self_training_rounds"] = 0
        refiner.update(NO_CLASSES)
    validate_params(raw, str(params_file))
    params_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    print(f"label kinds: {task.kinds}")
    print(f"estimator: {'classifies ' + task.target_column if task.can_pseudo_label else 'regresses ' + str(task.regressed)}"
          f" ({task.metric.title})")
    print(f"wrote {params_file} (task: images). Next: dvc repro   (or: make run)")


def example(args: argparse.Namespace) -> None:
    from refiner.tasks.images.example import make_example
    paths = make_example(Path(args.out), args.num_synthetic, args.num_camera, args.num_test, args.seed)
    print(f"wrote {args.out}: {args.num_synthetic} synthetic, {args.num_camera} camera, {args.num_test} labelled camera test images")
    print("next: simrefinery init " + " ".join(f"--{k.replace('_', '-')} {_relative(str(v))}" for k, v in paths.items())
          + " --fast")


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="simrefinery", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = main.add_subparsers(dest="command", required=True)
    p = commands.add_parser("init", help="write params.yaml's images task from your folders")
    p.add_argument("--synthetic", required=True, help="simulator images: a folder (then --labels), a Parquet "
                   "dataset (directory or file) or a Hugging Face datasets directory with an 'image' column")
    p.add_argument("--labels", help="the synthetic folder's labels: .csv, .jsonl or .parquet, one row per image")
    p.add_argument("--real", required=True, help="a folder of unlabelled camera images (recursive: png, jpg, webp)")
    p.add_argument("--test", help="a labelled real test set: a folder (then --test-labels) or a table directory; "
                   "without one, evaluate reports label-free figures only")
    p.add_argument("--test-labels", help="the test folder's labels, in the synthetic labels' format")
    p.add_argument("--key", default="file", help="the labels' column naming each image, relative to its folder (default: file)")
    p.add_argument("--size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"), help="make every image this size (default: the first synthetic image's)")
    p.add_argument("--fit", choices=["resize", "crop"], default="resize", help="resize: stretch; crop: centre-crop to the aspect ratio, then resize")
    p.add_argument("--color", choices=["rgb", "gray"], default="rgb", help="colour mode through the pipeline (default: rgb)")
    p.add_argument("--target", nargs="+", help="label columns the estimator learns (default: every float-valued column, else the class column)")
    p.add_argument("--self-training-rounds", type=int, default=2, help="for a class target: pseudo-labelling rounds (0: off)")
    p.add_argument("--fast", action="store_true", help="a small refiner and few steps: a first look in minutes on a CPU")
    p.add_argument("--params", default="params.yaml", help="the params file to write (default: params.yaml; its comments are not kept)")
    p.set_defaults(run=init)
    p = commands.add_parser("example", help="generate a sim-to-sim RGB shapes world to try the images task on")
    p.add_argument("out", help="folder to write it to")
    p.add_argument("--num-synthetic", type=int, default=2000)
    p.add_argument("--num-camera", type=int, default=1000, help="unlabelled camera images")
    p.add_argument("--num-test", type=int, default=500, help="labelled camera test images")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=example)
    return main


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        args.run(args)
    except (ParamsError, DatasetError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
