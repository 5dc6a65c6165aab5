"""The repository layout and packaging contracts of shared/DESIGN.md."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import REPO

PLUGIN_ROOTS = ("connectors", "plugins", "policies")


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _plugin_folders() -> list[str]:
    folders = []
    for root in PLUGIN_ROOTS:
        for path in sorted((REPO / root).iterdir()):
            if path.is_dir() and path.name.startswith("kadapt_") and any(path.glob("*.py")):
                folders.append(f"{root}/{path.name}")
    return folders


def test_no_init_file_shadows_a_source_root():
    for folder in ("", "platform", *PLUGIN_ROOTS):
        assert not (REPO / folder / "__init__.py").exists(), f"{folder or 'repo root'}/__init__.py must not exist"


def test_every_plugin_folder_is_in_the_wheel_and_the_entry_points():
    project = _pyproject()
    packages = set(project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"])
    entry_modules = set(project["project"]["entry-points"]["kadapt"].values())
    folders = _plugin_folders()
    assert folders, "expected built-in plugins under connectors/, plugins/ or policies/"
    for folder in folders:
        assert folder in packages, f"{folder} is missing from [tool.hatch.build.targets.wheel] packages"
        assert folder.split("/")[1] in entry_modules, f"{folder} is missing from [project.entry-points.kadapt]"
    assert "platform/kadapt" in packages


def test_installed_entry_points_match_pyproject():
    declared = _pyproject()["project"]["entry-points"]["kadapt"]
    installed = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="kadapt")}
    assert installed == declared, "reinstall with `pip install -e .` after changing entry points"


def test_standard_library_platform_module_is_not_shadowed():
    output = subprocess.run(
        [sys.executable, "-c", "import platform; print(platform.system())"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    import platform

    assert output == platform.system()


def test_public_api_is_pinned():
    import kadapt

    assert sorted(kadapt.__all__) == ["KadaptError", "__version__", "hookimpl"]


def _module_graph() -> dict[str, set[str]]:
    """kadapt's top-level modules and the ones each imports, at any depth of the file (inside functions too)."""
    import grimp

    graph = grimp.build_graph("kadapt", exclude_type_checking_imports=True)
    edges: dict[str, set[str]] = {}
    for module in graph.modules:
        top = ".".join(module.split(".")[:2])
        edges.setdefault(top, set())
        for imported in graph.find_modules_directly_imported_by(module):
            other = ".".join(imported.split(".")[:2])
            if other != top and other != "kadapt":
                edges[top].add(other)
    edges.pop("kadapt", None)
    return edges


def _circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other in a circle (strongly connected, more than one module)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in edges.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_modules_of_kadapt_import_each_other_in_a_circle():
    circles = _circles(_module_graph())
    assert circles == [], f"modules importing each other in a circle (inside functions too): {circles}"


def test_every_module_of_kadapt_has_its_layer_and_the_import_contracts_hold():
    layers = _pyproject()["tool"]["importlinter"]["contracts"][1]["layers"]
    listed = {name.strip() for line in layers for name in line.replace("|", ":").split(":")}
    assert set(_module_graph()) == listed, "pyproject.toml's [tool.importlinter] layers list each module once"
    lint = Path(sys.executable).parent / "lint-imports"  # import-linter, installed with kadapt's dev extras
    result = subprocess.run([str(lint)], cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert "Contracts: 2 kept, 0 broken" in result.stdout, result.stdout[-3000:] + result.stderr[-2000:]
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def test_plugins_use_kadapt_only_through_its_plugin_contract():
    """A built-in plugin imports what a third-party one can count on: kadapt (hookimpl), kadapt.contracts,
    kadapt.models and kadapt.errors, never kadapt's internals."""
    import grimp

    packages = [folder.split("/")[1] for folder in _plugin_folders()]
    graph = grimp.build_graph("kadapt", *packages, exclude_type_checking_imports=True)
    allowed = {"kadapt", "kadapt.contracts", "kadapt.errors", "kadapt.models"}
    found = {
        f"{module} -> {imported}"
        for package in packages
        for module in graph.find_descendants(package) | {package}
        for imported in graph.find_modules_directly_imported_by(module)
        if imported.split(".")[0] == "kadapt" and ".".join(imported.split(".")[:2]) not in allowed
    }
    assert not found, f"plugins importing kadapt's internals: {sorted(found)}"


@pytest.fixture
def machine_settings(monkeypatch):
    """Settings a developer's shell or a CI machine might export."""
    monkeypatch.setenv("KADAPT_RETRIEVAL_K", "99")
    monkeypatch.setenv("KADAPT_JUDGE", "gpt-judge")


def test_kadapt_env_gives_every_test_kadapts_defaults_whatever_the_machine_sets(machine_settings, kadapt_env):
    import os

    from kadapt.settings import Settings

    assert "KADAPT_RETRIEVAL_K" not in os.environ and "KADAPT_JUDGE" not in os.environ
    settings = Settings()
    assert settings.retrieval_k == Settings.model_fields["retrieval_k"].default and settings.judge == "string"
    assert os.environ["KADAPT_DATA_DIR"] == str(kadapt_env / "data")


def test_every_all_lists_what_its_module_has_and_plugins_import_only_what_the_contract_lists():
    import ast
    import importlib

    import kadapt.contracts

    wrong = []
    for path in sorted((REPO / "platform" / "kadapt").rglob("*.py")):
        if "migrations" in path.parts or path.name == "__main__.py":
            continue
        parts = path.relative_to(REPO / "platform").with_suffix("").parts
        module = importlib.import_module(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
        wrong += [f"{module.__name__}.{name}" for name in getattr(module, "__all__", []) if not hasattr(module, name)]
    assert not wrong, f"__all__ names what its module does not have: {wrong}"
    listed = set(kadapt.contracts.__all__)
    unlisted = sorted(
        f"{path.relative_to(REPO)}: {alias.name}"
        for root in ("plugins", "connectors", "policies")
        for path in (REPO / root).rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and node.module == "kadapt.contracts"
        for alias in node.names
        if alias.name not in listed
    )
    assert not unlisted, f"plugins import names kadapt.contracts does not list: {unlisted}"


def test_no_function_is_longer_than_sixty_lines():
    """Long work is split into named steps; a database migration's upgrade is one script and exempt."""
    import ast

    long = []
    for root in ("platform", "plugins", "connectors", "policies"):
        for path in (REPO / root).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > 60:
                        long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long
