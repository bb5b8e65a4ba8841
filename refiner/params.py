"""params.yaml as one typed object: a section per stage (``refiner.config``), one per
registered world (its ``Params``), unknown keys and unknown worlds refused.

    params = load_params()                                    # params.yaml
    params = load_params(overrides=parse_overrides(["train_refiner.lambda=2"]))
    params.train_refiner.lam, params.task

Every stage, the Prefect flow and the sweep load params through here and take overrides in
one syntax (``KEY=VALUE``, the value read as YAML, as ``dvc exp run -S`` reads it), so a
misspelt key or a wrong type fails the same way on every path, naming the dotted key and
the file.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, create_model

from refiner import config
from refiner.errors import ParamsError
from refiner.tasks import WORLDS

PARAMS_FILE = Path("params.yaml")


class _Base(config.Section):
    task: Literal[tuple(WORLDS)] = Field("digits", description="which world: a name in refiner/tasks/")  # type: ignore[valid-type]
    seed: int = Field(0, description="one seed for every stage: same params + seed = same dataset digests")
    image_encoding: Literal["png", "raw"] = Field("raw", description=(
        "how datasets hold images: raw pixel bytes (no decoding: 20-190x faster to read than PNG, "
        "BENCHMARKS.md) or png (smaller for photo-like images; the Hugging Face Image type); every "
        "stage reads both"))
    render: config.RenderParams = config.RenderParams()
    ingest: config.IngestParams = config.IngestParams()
    train_refiner: config.SimGANParams = config.SimGANParams()
    refine: config.RefineParams = config.RefineParams()
    train_estimator: config.EstimatorParams = config.EstimatorParams()
    evaluate: config.EvaluateParams = config.EvaluateParams()

    def section(self, dotted: str) -> Any:
        """The value at a dotted key as params.yaml spells it (``lambda``, not ``lam``)."""
        node: Any = self.model_dump(mode="json", by_alias=True)
        for key in dotted.split("."):
            node = node[key]
        return node


Params = create_model("Params", __base__=_Base, **{
    name: (world.Params, Field(default_factory=world.Params, description=f"the {name} task's settings"))
    for name, world in WORLDS.items()})


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """["train_refiner.lambda=2", "digits.real=mnist"] -> {dotted key: YAML value}."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ParamsError(f"override {item!r}: expected KEY=VALUE, e.g. train_refiner.lambda=2")
        overrides[key] = yaml.safe_load(value)
    return overrides


def set_dotted(raw: dict, dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in a nested dict, creating sections (the model refuses what does not exist)."""
    *parents, leaf = dotted.split(".")
    node = raw
    for key in parents:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ParamsError(f"{dotted}: {key} is not a section")
    node[leaf] = value


def validate_params(raw: dict, source: str = str(PARAMS_FILE)) -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        problems = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                    + (f" (got {e['input']!r})" if e["type"] != "missing" and not isinstance(e["input"], dict) else "")
                    for e in err.errors()]
        raise ParamsError(f"{source}: " + "; ".join(problems)) from None


def load_params(path: Path = PARAMS_FILE, overrides: dict[str, Any] | None = None) -> Params:
    raw = yaml.safe_load(Path(path).read_text()) or {}
    source = str(path)
    if overrides:
        raw = copy.deepcopy(raw)
        for dotted, value in overrides.items():
            set_dotted(raw, dotted, value)
        source = f"{path} with overrides {sorted(overrides)}"
    return validate_params(raw, source)
