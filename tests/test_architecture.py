"""The house rules a newcomer can check: no task named outside its own module, no stage
importing another stage."""

import ast
from pathlib import Path

from refiner.tasks import TASKS
from tests.conftest import ROOT

PROJECT_CODE = [p for folder in ("refiner", "stages", "flows", "experiments") for p in (ROOT / folder).rglob("*.py")
                if "tasks" not in p.relative_to(ROOT).parts]


def task_name_branches(path: Path) -> list[str]:
    """Comparisons with a task's name, and dicts keyed by task names: how code special-cases a task."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        constants = []
        if isinstance(node, ast.Compare):
            constants = [n for n in ast.walk(node) if isinstance(n, ast.Constant)]
        elif isinstance(node, ast.Dict):
            constants = [k for k in node.keys if isinstance(k, ast.Constant)]
        found += [f"{path.relative_to(ROOT)}:{c.lineno} {c.value!r}" for c in constants if c.value in TASKS]
    return found


def test_no_task_name_branch_outside_the_tasks_package():
    assert len(TASKS) >= 2 and PROJECT_CODE
    assert [hit for path in PROJECT_CODE for hit in task_name_branches(path)] == []


def test_the_branch_finder_finds_a_branch(tmp_path):
    sample = ROOT / "refiner" / "_branch_sample.py"
    try:
        sample.write_text('def f(task):\n    return 1 if task == "gaze" else {"digits": 2}\n')
        assert task_name_branches(sample) == ["refiner/_branch_sample.py:2 'gaze'", "refiner/_branch_sample.py:2 'digits'"]
    finally:
        sample.unlink()


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def test_no_stage_imports_another_stage():
    stages = {p.stem for p in (ROOT / "stages").glob("*.py")} - {"__init__", "common"}
    for path in (ROOT / "stages").glob("*.py"):
        others = {f"stages.{name}" for name in stages - {path.stem}}
        assert not imported_modules(path) & others, path.name


def test_the_library_imports_no_stage_or_flow():
    for path in (ROOT / "refiner").rglob("*.py"):
        assert not [m for m in imported_modules(path) if m.split(".")[0] in ("stages", "flows")], path
