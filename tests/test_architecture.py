"""The house rules a newcomer can check: no world named outside its own module, no stage
importing another stage, the library naming no stage, modules of one subject, and the code
deps dvc.yaml declares for each stage equal to what the stage imports."""

import ast
from pathlib import Path

import pytest

from refiner.tasks import WORLDS
from stages.common import dvc_stages, stage_command
from tests.helpers import ROOT

PROJECT_CODE = [p for folder in ("refiner", "stages", "flows", "experiments") for p in (ROOT / folder).rglob("*.py")
                if "tasks" not in p.relative_to(ROOT).parts]
# imported by the stages, shaping none of their outputs: changing them reruns nothing
RECORDS_ONLY = ("refiner/tracking",)


def task_name_branches(path: Path) -> list[str]:
    """Comparisons with a world's name, and dicts keyed by world names: how code special-cases a world."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        constants = []
        if isinstance(node, ast.Compare):
            constants = [n for n in ast.walk(node) if isinstance(n, ast.Constant)]
        elif isinstance(node, ast.Dict):
            constants = [k for k in node.keys if isinstance(k, ast.Constant)]
        found += [f"{path.relative_to(ROOT)}:{c.lineno} {c.value!r}" for c in constants if c.value in WORLDS]
    return found


def test_no_task_name_branch_outside_the_tasks_package():
    assert len(WORLDS) >= 2 and PROJECT_CODE
    assert [hit for path in PROJECT_CODE for hit in task_name_branches(path)] == []


def test_the_branch_finder_finds_a_branch(tmp_path):
    sample = tmp_path / "branch_sample.py"
    sample.write_text('def f(task):\n    return 1 if task == "gaze" else {"digits": 2}\n')
    assert [hit.split(":", 1)[1] for hit in task_name_branches_at(sample)] == ["2 'gaze'", "2 'digits'"]


def task_name_branches_at(path: Path) -> list[str]:
    global ROOT
    saved, ROOT = ROOT, path.parent  # report paths relative to the sample's folder
    try:
        return task_name_branches(path)
    finally:
        ROOT = saved


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


def test_the_library_imports_no_stage_or_flow_and_names_none():
    for path in (ROOT / "refiner").rglob("*.py"):
        assert not [m for m in imported_modules(path) if m.split(".")[0] in ("stages", "flows")], path
        assert "stages." not in path.read_text(), path  # e.g. a producer's name: the stage passes its own


def test_each_module_holds_one_subject_in_at_most_350_lines():
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "refiner").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 350}
    assert long == {}


def test_each_package_says_in_its_docstring_what_lives_there():
    for init in (ROOT / "refiner").rglob("__init__.py"):
        assert ast.get_docstring(ast.parse(init.read_text())), init.relative_to(ROOT)


def module_file(name: str) -> Path | None:
    """refiner.data.codec -> refiner/data/codec.py (or a package's __init__.py); None outside the project."""
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_files(entry: Path) -> set[Path]:
    """Every project file running ``entry`` imports (at module level or inside functions), with
    the packages they sit in; importing the world registry imports every world."""
    seen, todo = set(), [entry]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        names = imported_modules(path)
        for name in names:
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):  # a module's packages run their __init__ first
                found = module_file(".".join(parts[:depth]))
                if found is not None:
                    todo.append(found)
        if path == ROOT / "refiner/tasks/__init__.py":
            todo += list((ROOT / "refiner/tasks").rglob("*.py"))
    return {p for p in seen if runs_code(p)}


def runs_code(path: Path) -> bool:
    """A module holding more than its docstring (a package's map of rooms runs nothing)."""
    body = ast.parse(path.read_text()).body
    return any(not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)) for node in body)


def covered(path: str, deps: set[str]) -> bool:
    return any(path == dep or path.startswith(dep + "/") for dep in deps)


def code_deps(stage) -> set[str]:
    return {str(dep.def_path) for dep in stage.deps if dep not in stage.params
            and str(dep.def_path).startswith(("refiner/", "stages/"))}


@pytest.mark.parametrize("stage", [stage.name for stage in dvc_stages(ROOT)], ids=lambda name: name.replace("@", "-"))
def test_a_stages_declared_code_deps_are_what_it_imports(stage):
    [dvc_stage] = [s for s in dvc_stages(ROOT) if s.name == stage]
    module, _ = stage_command(dvc_stage)
    imported = {str(p.relative_to(ROOT)) for p in imported_files(module_file(module))}
    imported = {p for p in imported if not covered(p, set(RECORDS_ONLY))}
    declared = code_deps(dvc_stage)
    assert sorted(p for p in imported if not covered(p, declared)) == [], "imported, not declared in dvc.yaml"
    code = {str(p.relative_to(ROOT)) for dep in declared for p in ([ROOT / dep] if dep.endswith(".py") else
                                                                     (ROOT / dep).rglob("*.py")) if runs_code(p)}
    assert sorted(code - imported) == [], "declared, not imported (a change there would rerun the stage for nothing)"


def test_the_drift_check_sees_an_undeclared_import():
    imported = {str(p.relative_to(ROOT)) for p in imported_files(ROOT / "stages/render.py")}
    assert "refiner/tasks/images/readers.py" in imported and "refiner/data/codec.py" in imported
    assert not covered("refiner/data/codec.py", {"refiner/dat"}) and covered("refiner/data/codec.py", {"refiner/data"})
