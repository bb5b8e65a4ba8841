"""Print where an artifact came from: the upstream tree down to params and code version.

    simrefinery lineage data/refined              # a dataset directory
    simrefinery lineage 155873199f6e...           # a dataset digest (a prefix is enough)
    simrefinery lineage <run id>                  # a stage run
    simrefinery lineage models:/simrefinery-estimator@champion   # a model

It follows the links that ``refiner.tracking`` records: a run's dataset inputs (by
contract digest) lead to the run whose output tag holds that digest; its model inputs
lead to the logged model and the run that trained it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from refiner.data import MANIFEST, manifest_digest
from refiner.tracking import runs


class Lineage:
    def __init__(self, client, experiment_id: str):
        self.client, self.experiment_id = client, experiment_id
        self._stage_runs = None

    # ------------------------------------------------------------ lookups
    def stage_runs(self):
        if self._stage_runs is None:
            self._stage_runs = self.client.search_runs(
                [self.experiment_id], filter_string="tags.`simrefinery.role` = 'stage'",
                order_by=["attributes.start_time DESC"], max_results=5000)
        return self._stage_runs

    def producer_of(self, digest: str):
        """The latest run whose output tag holds this digest (or a prefix of it)."""
        for run in self.stage_runs():
            for key, value in run.data.tags.items():
                if key.startswith(runs.OUTPUT_TAG) and value.startswith(digest):
                    return run, key[len(runs.OUTPUT_TAG):], value
        return None, None, digest

    def resolve(self, target: str):
        """(kind, object) for a dataset path, digest, run id or model URI."""
        path = Path(target)
        if (path / MANIFEST).is_file():
            return "dataset", manifest_digest(json.loads((path / MANIFEST).read_text()))
        if target.startswith("models:/"):
            return "model", self.model(target)
        if re.fullmatch(r"[0-9a-f]{32}", target):
            try:
                return "run", self.client.get_run(target)
            except Exception:
                pass
        if re.fullmatch(r"[0-9a-f]{6,64}", target):
            return "dataset", target
        raise SystemExit(f"lineage: {target!r} is not a dataset directory, digest, run id or models:/ URI")

    def model(self, uri: str):
        """A logged model from models:/<name>@<alias>, models:/<name>/<version> or models:/<model id>."""
        return self.client.get_logged_model(runs.logged_model_id(self.client, uri))

    # ------------------------------------------------------------ the tree
    def dataset_lines(self, digest: str, depth: int, name: str | None = None, seen=None) -> list[str]:
        run, output_name, full = self.producer_of(digest)
        label = f"dataset {name or output_name or '?'} {full[:16]}"
        if run is None:
            return [_indent(depth, f"{label}  (no run in this store produced it)")]
        return [_indent(depth, label)] + self.run_lines(run, depth + 1, seen)

    def run_lines(self, run, depth: int, seen=None) -> list[str]:
        seen = set() if seen is None else seen
        run = self.client.get_run(run.info.run_id)  # search results leave model inputs out
        tags, info = run.data.tags, run.info
        head = (f"run {tags.get('simrefinery.stage', info.run_name)} {info.run_id}  "
                f"commit {tags.get('git.commit', '?')[:10]}{' (dirty)' if tags.get('git.dirty') == 'true' else ''}")
        if info.run_id in seen:
            return [_indent(depth, head + "  (shown above)")]
        seen.add(info.run_id)
        params = ", ".join(f"{k}={v}" for k, v in sorted(run.data.params.items()))
        lines = [_indent(depth, head), _indent(depth + 1, f"params: {params}")]
        for model_input in getattr(run.inputs, "model_inputs", None) or []:
            lines += self.model_lines(self.client.get_logged_model(model_input.model_id), depth + 1, seen)
        for dataset_input in run.inputs.dataset_inputs:
            input_tags = {t.key: t.value for t in dataset_input.tags}
            if input_tags.get("mlflow.data.context") == "output":
                continue
            digest = input_tags.get("simrefinery.digest", dataset_input.dataset.digest)
            lines += self.dataset_lines(digest, depth + 1, dataset_input.dataset.name, seen)
        return lines

    def model_lines(self, model, depth: int, seen=None) -> list[str]:
        registered_name = model.tags.get("registered_model")
        versions = self.client.search_model_versions(f"name = '{registered_name}'") if registered_name else []
        mine = [self.client.get_model_version(v.name, v.version)  # search results leave aliases out
                for v in versions if v.source == f"models:/{model.model_id}"]
        registered = [f"{v.name} v{v.version}" + (f" @{','.join(v.aliases)}" if v.aliases else "") for v in mine]
        label = f"model {model.name} {model.model_id}" + (f"  ({'; '.join(registered)})" if registered else "")
        return [_indent(depth, label)] + self.run_lines(self.client.get_run(model.source_run_id), depth + 1, seen)

    def tree(self, target: str) -> str:
        kind, obj = self.resolve(target)
        if kind == "dataset":
            lines = self.dataset_lines(obj, 0)
        elif kind == "run":
            lines = self.run_lines(obj, 0)
        else:
            lines = self.model_lines(obj, 0)
        return "\n".join(lines)


def _indent(depth: int, text: str) -> str:
    return f"{'   ' * (depth - 1)}└─ {text}" if depth else text
