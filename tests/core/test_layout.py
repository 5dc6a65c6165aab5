"""The repository layout and packaging contracts of shared/DESIGN.md."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tomllib

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
