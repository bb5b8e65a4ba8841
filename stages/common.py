"""What every stage shares: its command line (the paths dvc.yaml gives it, plus ``--set
KEY=VALUE`` overrides), params loading, the params keys dvc.yaml declares for it (through
DVC's own API), and small writers."""

from __future__ import annotations

import csv
import functools
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import tyro
from pydantic import BaseModel, ConfigDict, Field

from filelock import FileLock, Timeout

from refiner.errors import Refused
from refiner.params import Params, load_params, parse_overrides


class StageArgs(BaseModel):
    """A stage's command line: the paths are dvc.yaml's (its ``cmd``), never defaults here."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    set: list[str] = Field(default_factory=list, description=(
        "KEY=VALUE params overrides, e.g. train_refiner.lambda=2 (the outputs then differ from what dvc.lock records)"))


Args = TypeVar("Args", bound=StageArgs)


def parse_args(model: type[Args], argv: list[str] | None, description: str) -> Args:
    return tyro.cli(model, args=argv, description=description)


def dvc_stages(root: Path = Path(".")) -> list:
    """dvc.yaml's stages in its order (``foreach`` expanded, vars resolved), as DVC reads them."""
    return _dvc_stages(Path(root).resolve())


@functools.lru_cache(maxsize=8)
def _dvc_stages(root: Path) -> list:
    # once per project and process: dvc.yaml does not change under a running stage; the repo
    # stays open, so the flow can hash the stages' deps with DVC's own state cache
    from dvc.repo import Repo
    return list(Repo(str(root)).index.stages)


def stage_command(stage) -> tuple[str, list[str]]:
    """A DVC stage's ``python -m stages.<module> ARGS``: (the module, its arguments)."""
    import shlex
    words = shlex.split(stage.cmd)
    if words[:2] != ["python", "-m"] or not words[2].startswith("stages."):
        raise ValueError(f"dvc.yaml: stage {stage.name}: cmd must be `python -m stages.<name> ...`, got {stage.cmd!r}")
    return words[2], words[3:]


def declared_params(stage: str, params: Params, root: Path = Path(".")) -> dict:
    """The params keys dvc.yaml declares for ``stage`` (its module's name: the keys of every
    stage that runs it), plus task and seed: what its MLflow run logs, what its dataset
    manifests record and what its Prefect cache key holds."""
    keys = [key for dvc_stage in dvc_stages(root) if stage_command(dvc_stage)[0] == f"stages.{stage}"
            for dependency in dvc_stage.params for key in dependency.params]
    return {key: params.section(key) for key in dict.fromkeys(["task", "seed", *keys])}


def main(run: Callable[[Params, Args], dict], model: type[Args], description: str,
         argv: list[str] | None = None) -> None:
    """A stage's ``main()``: ``run(params.yaml's params with --set overrides, the arguments)``.
    A refused input (a bad params key, a dataset or source breaking the contract, an unusable
    checkpoint) ends the process with one line naming the file and the problem, not a traceback."""
    args = parse_args(model, argv if argv is not None else sys.argv[1:], description)
    try:
        run(load_params(overrides=parse_overrides(args.set)), args)
    except Refused as err:
        raise SystemExit(f"error: {err}") from None


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


@contextmanager
def committed(targets: list[Path]) -> Iterator[dict[Path, Path]]:
    """A stage's outputs written as one unit, as datasets are (``refiner.data.writer``): yields
    where to write each target, in a hidden staging directory beside it (one per folder, so a
    model directory and its MLflow record share one). On success each target is replaced by
    what was staged for it, or removed when nothing was (a former model's record), the last
    one (the model, which names the lock and the staging) last: a few renames. On an error or
    a kill the previous outputs stay whole (a killed writer's staging is swept at the next
    start). One writer at a time: a second is refused, not interleaved."""
    model = targets[-1]
    lock = FileLock(model.parent / f".{model.name}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise Refused(f"{model}: another process is writing it (lock {lock.lock_file}); wait for it to finish "
                      "or stop it") from None
    try:
        stagings = {target.parent: target.parent / f".{model.name}.staging" for target in targets}
        for staging in stagings.values():
            shutil.rmtree(staging, ignore_errors=True)  # a killed writer's (the lock says none is alive)
            staging.mkdir(parents=True)
        yield {target: stagings[target.parent] / target.name for target in targets}
        for target in targets:
            _put(stagings[target.parent] / target.name, target)
        for staging in stagings.values():
            shutil.rmtree(staging)
    finally:
        lock.release()


def _put(staged: Path, target: Path) -> None:
    old = target.parent / f".{target.name}.old"
    shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
    if target.exists():
        os.replace(target, old)
    if staged.exists():
        os.replace(staged, target)
    shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
