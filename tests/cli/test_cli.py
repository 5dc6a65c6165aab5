"""The real ``kadapt`` command line, run in subprocesses."""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import REPO, run_kadapt

PLUGIN_DIR = REPO / "tests" / "cli" / "plugins"


@pytest.fixture
def env(kadapt_env):
    return dict(os.environ)


def test_help_lists_commands():
    result = run_kadapt("--help")
    assert result.returncode == 0
    for command in ("kb", "source", "sync", "search", "status", "plugins", "config", "jobs"):
        assert command in result.stdout


def test_a_plugin_defined_in_tests_adds_a_connector_the_cli_uses(env):
    env |= {"KADAPT_PLUGINS": "kadapt_test_memo", "PYTHONPATH": str(PLUGIN_DIR)}
    assert run_kadapt("kb", "create", "memos", env=env).returncode == 0
    plugins = json.loads(run_kadapt("plugins", "--json", env=env).stdout)
    memo = next(info for info in plugins if info["name"] == "kadapt_test_memo")
    assert memo["enabled"] and memo["registers"] == {"register_connectors": ["memo"]}
    added = run_kadapt(
        "source",
        "add",
        "memos",
        "memo",
        "--memo",
        "The canteen serves paella on Fridays.",
        "--memo",
        "Parking permits are renewed every January.",
        env=env,
    )
    assert added.returncode == 0, added.stderr
    synced = run_kadapt("sync", "memos", "--json", env=env)
    assert synced.returncode == 0, synced.stderr
    assert json.loads(synced.stdout)["added"] == 2
    hits = json.loads(run_kadapt("search", "memos", "when is paella served", "-k", "1", "--json", env=env).stdout)
    assert hits[0]["locator"] == "memo-0" and "paella" in hits[0]["text"]


@pytest.mark.slow
def test_ingest_status_and_errors_through_the_cli(env, kadapt_env):
    docs = kadapt_env / "docs"
    docs.mkdir()
    (docs / "ok.md").write_text("# Lunch\n\nLunch is served from 12:00 to 13:30 in the canteen.\n")
    (docs / "bad.md").write_bytes(b"\x00\x01\x02 binary")
    assert run_kadapt("kb", "create", "kb1", env=env).returncode == 0
    assert (
        run_kadapt("source", "add", "kb1", "files", "--path", str(docs), "--include", "*.md", env=env).returncode == 0
    )
    first = run_kadapt("sync", "kb1", env=env)
    assert first.returncode == 0, first.stderr
    assert "1 added" in first.stdout and "1 errors" in first.stdout
    second = json.loads(run_kadapt("sync", "kb1", "--json", env=env).stdout)
    assert second["chunks_embedded"] == 0 and second["snapshot_created"] is False
    status = run_kadapt("status", "kb1", env=env)
    assert "bad.md" in status.stdout and "binary" in status.stdout
    status_json = json.loads(run_kadapt("status", "kb1", "--json", env=env).stdout)
    assert status_json["documents"] == 1 and status_json["errors"][0]["locator"] == "bad.md"
    assert status_json["health"]["state"] == "errors" and "document errors" in status.stdout
    search = run_kadapt("search", "kb1", "when is lunch", env=env)
    assert "ok.md" in search.stdout and "score" in search.stdout
    jobs = json.loads(run_kadapt("jobs", "--json", env=env).stdout)
    assert [job["state"] for job in jobs] == ["succeeded", "succeeded"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sync", "nope"], "no KB named 'nope'"),
        (["kb", "create", "Bad Name"], "invalid KB name"),
        (["source", "add", "kb1", "ftp", "--url", "x"], "no connector of kind 'ftp'"),
        (["source", "add", "kb1", "files", "--colour", "red"], "unknown option --colour"),
        (["source", "add", "kb1", "files"], "path: Field required"),
        (["source", "add", "kb1", "files", "--path", "/etc"], "outside the allowed roots"),
        (["source", "add", "kb1", "web", "--url", "http://10.0.0.1/"], "KADAPT_ALLOW_PRIVATE_NETWORKS"),
    ],
)
def test_user_errors_print_one_clear_line(env, args, message):
    run_kadapt("kb", "create", "kb1", env=env)
    result = run_kadapt(*args, env=env)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_usage_error_exits_2(env):
    result = run_kadapt("search", env=env)
    assert result.returncode == 2 and "Missing argument" in result.stderr


def test_refused_source_is_not_stored(env):
    run_kadapt("kb", "create", "kb1", env=env)
    run_kadapt("source", "add", "kb1", "files", "--path", "/etc", env=env)
    assert json.loads(run_kadapt("source", "list", "--json", env=env).stdout) == []


def test_config_masks_secrets(env):
    env |= {"KADAPT_SECRET_KEY": "hunter2"}
    output = run_kadapt("config", "--json", env=env).stdout
    assert "hunter2" not in output and json.loads(output)["secret_key"] == "**********"
