"""The package's structure: layers import only downward (import-linter's contract in pyproject.toml, run by
`make lint`), imports of the package's own modules sit at the top of each module, and the Ray driver takes
`copick-soup pick`'s options."""

import ast
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parents[1]
# Command modules import the pipeline inside their bodies on purpose: copick imports every plugin module on every
# `copick` call, and the pipeline brings torch.
DEFERRING = {"copick_soup/cli"}


def function_level_imports(path: Path, root: Path = ROOT) -> list[str]:
    """'file:line module' for each import of copick_soup or ray_jobs inside a function of `path`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                names = ([inner.module or ""] if isinstance(inner, ast.ImportFrom) else
                         [a.name for a in inner.names] if isinstance(inner, ast.Import) else [])
                found += [f"{path.relative_to(root)}:{inner.lineno} {n}" for n in names
                          if n.split(".")[0] in ("copick_soup", "ray_jobs")]
    return found


def test_the_package_imports_its_own_modules_at_the_top():
    files = [p for folder in ("copick_soup", "ray_jobs") for p in (ROOT / folder).rglob("*.py")
             if not any(str(p.relative_to(ROOT)).startswith(d) for d in DEFERRING)]
    assert len(files) > 40
    assert [hit for p in files for hit in function_level_imports(p)] == []


def test_the_check_finds_a_function_level_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from copick_soup.ensemble import Ensemble\n    import numpy\n")
    assert function_level_imports(module, tmp_path) == ["m.py:2 copick_soup.ensemble"]


def test_every_pick_option_exists_on_the_ray_driver_with_the_same_default():
    from copick_soup.cli.pick import pick, soup_pick
    from ray_jobs.pick import command

    ray_options = {p.name: p for p in command.params}
    for param in pick.params:
        assert param.name in ray_options, f"ray_jobs.pick lacks {param.opts}"
        other = ray_options[param.name]
        assert (other.opts, other.default, other.multiple, type(other.type)) == (
            param.opts, param.default, param.multiple, type(param.type)), param.name
    assert [p.name for p in soup_pick.params] == [p.name for p in pick.params]  # the plugin: the same command
    assert isinstance(command, click.Command)


def test_the_command_modules_import_neither_torch_nor_the_pipeline():
    """copick imports every plugin module on every `copick` call: they must stay light."""
    import subprocess
    import sys

    code = ("import sys, copick_soup.cli, copick_soup.cli.pick, copick_soup.cli.score, copick_soup.cli.train; "
            "print(sorted(m for m in ('torch', 'copick_soup.ensemble', 'copick_soup.train.loop', 'ray') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_the_declared_copick_floor_has_every_copick_api_the_package_uses():
    """Fails on a copick without them, and if the floor in pyproject.toml slips below the release that has them."""
    import inspect
    from importlib.metadata import version

    tomllib = pytest.importorskip("tomllib")
    from copick.models import CopickPicks
    from packaging.requirements import Requirement

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    requirements = {Requirement(r).name: Requirement(r) for r in declared}
    assert "cryoet-data-portal" in requirements  # imported by data/portal.py
    floor = requirements["copick"].specifier
    assert floor.contains(version("copick"))
    assert floor.contains("1.28.0") and not floor.contains("1.27.0")  # 1.28 added the three below
    assert callable(CopickPicks.scores) and callable(CopickPicks.full_positions)
    assert "scores" in inspect.signature(CopickPicks.from_numpy).parameters
