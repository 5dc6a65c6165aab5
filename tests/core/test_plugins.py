"""The plugin system: hookspecs documented, loading failures reported, contributions collected."""

from __future__ import annotations

import inspect
import re
import types

import pluggy
import pytest

from kadapt import hookspecs
from kadapt.errors import PluginError
from kadapt.plugins import Plugins
from tests.conftest import REPO

HOOKS = [
    (name, function)
    for name, function in inspect.getmembers(hookspecs, inspect.isfunction)
    if name.startswith("register_")
]


def test_all_design_hooks_are_declared():
    assert {name for name, _ in HOOKS} == {
        "register_connectors",
        "register_augmenters",
        "register_probe_generators",
        "register_judges",
        "register_models",
        "register_policies",
        "register_job_runners",
        "register_job_kinds",
        "register_commands",
        "register_routes",
    }


@pytest.mark.parametrize(("name", "function"), HOOKS)
def test_every_hook_argument_is_typed_and_documented(name, function):
    doc = inspect.getdoc(function) or ""
    assert "Fires" in doc, f"{name}: say when the hook fires"
    assert re.search(r"^Return", doc, re.M), f"{name}: say what to return"
    for parameter in inspect.signature(function).parameters.values():
        assert f":param {parameter.name}:" in doc, f"{name}: argument {parameter.name!r} is undocumented"
        assert parameter.annotation is not inspect.Parameter.empty, f"{name}: {parameter.name} has no type"


@pytest.mark.parametrize(("name", "function"), HOOKS)
def test_every_hook_is_documented_in_the_readme(name, function):
    readme = (REPO / "README.md").read_text()
    assert f"`{name}(" in readme, f"README.md does not document the {name} hook"


def test_every_setting_is_documented_in_the_readme():
    from kadapt.settings import Settings

    readme = (REPO / "README.md").read_text()
    for field in Settings.model_fields:
        assert f"`KADAPT_{field.upper()}`" in readme, f"README.md does not document KADAPT_{field.upper()}"


def test_hooks_are_called_with_keywords_only():
    plugins = Plugins(entry_points=False)
    with pytest.raises(TypeError):
        plugins.pm.hook.register_connectors(lambda item: None)


def test_builtin_plugins_load_from_entry_points():
    plugins = Plugins()
    assert {"files", "git", "web"} <= set(plugins.connectors())
    assert "inprocess" in plugins.job_runners()
    described = {info.name: info for info in plugins.describe()}
    assert described["files"].registers == {"register_connectors": ["files"]}
    assert all(info.enabled for info in described.values())


def test_kadapts_own_job_kinds_come_from_the_builtin_jobs_plugin_and_a_duplicate_kind_is_refused():
    from kadapt.jobs import JobKind, job_kinds

    plugins = Plugins()
    assert set(job_kinds(plugins)) >= {"sync", "augment", "probe", "train", "evaluate", "adapt"}
    described = {info.name: info for info in plugins.describe()}
    assert described["jobs"].registers["register_job_kinds"] == [
        "sync",
        "augment",
        "probe",
        "train",
        "evaluate",
        "adapt",
    ]
    # the job engine itself declares none (a test module that declared its own, such as tests/jobs/crash_kinds.py
    # imported by another test in this process, is not the engine's)
    declared = job_kinds(Plugins(entry_points=False))
    assert {kind: row for kind, row in declared.items() if not row.run.__module__.startswith("tests.")} == {}

    class Again:
        @hookspecs.hookimpl
        def register_job_kinds(self, register):
            register(JobKind("sync", lambda context: {}))

    plugins.register(Again(), name="again")
    with pytest.raises(PluginError, match="kind 'sync' is registered twice"):
        job_kinds(plugins)


def test_plugin_whose_import_fails_is_reported_disabled_not_fatal():
    plugins = Plugins(entry_points=True, modules=["kadapt_plugin_that_does_not_exist"])
    info = plugins.info["kadapt_plugin_that_does_not_exist"]
    assert not info.enabled
    assert "No module named" in info.reason and "pip install" in info.reason
    assert "files" in plugins.connectors()  # the rest still loads


def test_misspelled_hookimpl_fails_loudly():
    plugin = types.ModuleType("typo_plugin")

    @hookspecs.hookimpl
    def register_conectors(register):  # misspelled on purpose
        pass

    plugin.register_conectors = register_conectors
    plugins = Plugins(entry_points=False)
    with pytest.raises(pluggy.PluginValidationError):
        plugins.register(plugin, name="typo")


def test_duplicate_connector_kind_is_a_clear_error():
    from kadapt_files import FilesConnector

    class Again:
        @hookspecs.hookimpl
        def register_connectors(self, register):
            register(FilesConnector)

    plugins = Plugins()
    name = plugins.register(Again(), name="again")
    try:
        with pytest.raises(PluginError, match="registered twice"):
            plugins.connectors()
    finally:
        plugins.unregister(name)
    assert "files" in plugins.connectors()
