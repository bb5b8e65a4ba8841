"""DVC's experiments side by side in a terminal's width: `simrefinery experiments`.

`dvc exp show` gives every param and every dep's hash a column (121 of them here), so at
120 columns it shows ellipses. This table keeps what tells experiments apart: each one's
name, the headline figures (metrics/headline.json) and, one per line in the last column,
the params whose values differ between the rows shown (by their last key where that is
unique: `lambda`, else in full: `refine.batch_size`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

NAME_WIDTH = 24
WIDTH = 120


def dvc_experiments() -> list[dict]:
    """`dvc exp show --json` as DVC gives it (its own errors are raised, with its words)."""
    shown = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"], capture_output=True, text=True)
    if shown.returncode:
        raise RuntimeError(f"dvc exp show: {shown.stderr.strip() or shown.stdout.strip()}")
    return json.loads(shown.stdout)


def rows(shown: list[dict]) -> list[tuple[str, dict, dict]]:
    """(name, flat params, flat metrics) for the workspace, each baseline and its experiments."""
    out = []
    for commit in shown:
        out.append((commit.get("name") or _short(commit["rev"]), *_figures(commit)))
        for experiment in commit.get("experiments") or []:
            latest = experiment["revs"][0]
            out.append(("└ " + (experiment.get("name") or _short(latest["rev"])), *_figures(latest)))
    return out


def side_by_side(shown: list[dict], width: int = WIDTH) -> str:
    """One row per experiment; its changed params one per line in the last column."""
    table = rows(shown)
    if not table:
        return "no experiments (simrefinery run --set KEY=VALUE starts one)"
    metric_names = list(dict.fromkeys(name for _, _, metrics in table for name in metrics))
    changed = [key for key in dict.fromkeys(k for _, params, _ in table for k in params)
               if len({json.dumps(params.get(key)) for _, params, _ in table}) > 1]
    widths = [max(len(name), 6) for name in metric_names]
    leaves = [key.rsplit(".", 1)[-1] for _, params, _ in table[:1] for key in params]
    label = {key: leaf if leaves.count(leaf := key.rsplit(".", 1)[-1]) == 1 else key for key in changed}
    header = [f"{'experiment':<{NAME_WIDTH}}", *(f"{n:>{w}}" for n, w in zip(metric_names, widths))]
    indent = len("  ".join(header)) + 2
    lines = ["  ".join([*header, "changed params" if changed else "(no param differs)"])]
    for name, params, metrics in table:
        cells = [f"{_fit(name, NAME_WIDTH):<{NAME_WIDTH}}",
                 *(f"{_number(metrics.get(n)):>{w}}" for n, w in zip(metric_names, widths))]
        values = [part for key in changed
                  for part in textwrap.wrap(f"{label[key]}={_value(params.get(key))}", max(width - indent, 16))] or [""]
        lines.append("  ".join([*cells, values[0]]).rstrip())
        lines.extend(" " * indent + value for value in values[1:])
    return "\n".join(lines)


def _figures(revision: dict) -> tuple[dict, dict]:
    data = revision.get("data") or {}
    params, metrics = {}, {}
    for source in (data.get("params") or {}).values():
        params.update(_flat(source.get("data") or {}))
    for source in (data.get("metrics") or {}).values():
        metrics.update(_flat(source.get("data") or {}))
    return params, metrics


def _flat(values: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _number(value) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def _value(value) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _short(rev: str) -> str:
    return rev if rev == "workspace" else rev[:7]


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"
