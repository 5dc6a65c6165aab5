"""Shared fixtures: every test gets its own data dir, catalog and Chroma, with the real embedding model."""

from __future__ import annotations

import functools
import inspect
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import servers

REPO = Path(__file__).resolve().parent.parent
# Converted model weights are shared by every test (and kept between local runs): converting the
# packaged GGUF takes ~20 s, loading the converted folder well under a second.
MODELS_DIR = Path(os.environ.get("KADAPT_TEST_MODELS_DIR", REPO / ".kadapt" / "models"))
# Tests compare the model's outputs exactly (batched against alone, packed against per-choice scoring, a reference
# computed in float32): they run in float32 on every CPU, and tests/models/test_precision.py runs the bf16 path.
TEST_PRECISION = "fp32"
os.environ.setdefault("KADAPT_PRECISION", TEST_PRECISION)


# principal -> (role, groups) of the keys the access-control tests call with: the KBs they make are read by
# "staff" and owned by "hr" ("sales" reads and owns the console's "finance" KB)
PRINCIPALS = {
    "admin": ("admin", []),
    "editor_owner": ("editor", ["hr"]),
    "editor_other": ("editor", ["eng"]),
    "reader_member": ("reader", ["staff"]),
    "reader_other": ("reader", ["sales"]),
    "editor_reader": ("editor", ["staff"]),  # an editor who only reads the KB: sees it, may not manage it
}

POSTGRES_URL = os.environ.get("KADAPT_TEST_POSTGRES_URL")
CHROMA_URL = os.environ.get("KADAPT_TEST_CHROMA_URL")


# What sends a test to the catalog and the vector store: these fixtures, or a fixture or test whose code enters one
# of these (each ends in scaleout_databases, which gives a test its own databases on the scale-out servers).
STORAGE_FIXTURES = frozenset({"kadapt_env", "catalog", "store", "empty_catalog_url"})
STORAGE_CALLS = ("scaleout_databases(", "kadapt_settings(", "handbook_server(")
_storeless: set[str] = set()  # node ids of the tests that reach neither (found at collection)
_running: list[Any] = [None]  # the test whose setup or call is under way


@functools.cache  # a fixture's code is read once, not once per test that uses it
def _source(function) -> str:
    try:
        return inspect.getsource(function)
    except (OSError, TypeError):
        return ""


def reaches_storage(item) -> bool:
    """Whether ``item`` reaches the catalog or the vector store: it uses a fixture of STORAGE_FIXTURES, or its
    own code or one of its fixtures' code calls one of STORAGE_CALLS. Checked while the tests run: a test found
    storeless that enters scaleout_databases fails (so the second CI pass never leaves out one that it needs)."""
    if STORAGE_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    functions = [getattr(item, "function", None)]
    info = getattr(item, "_fixtureinfo", None)
    for definitions in info.name2fixturedefs.values() if info else ():
        functions += [definition.func for definition in definitions]
    return any(call in _source(function) for function in functions if function for call in STORAGE_CALLS)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` run where torch sees a CUDA device, and are skipped (saying so) elsewhere. In the
    scale-out configuration (``.ci/scaleout``), the tests that reach neither the catalog nor the vector store are
    left out: they run exactly as in the first pass (``KADAPT_TEST_SCALEOUT_ALL=1`` runs them all the same)."""
    _slow_files_first(items)
    _storeless.update(item.nodeid for item in items if not reaches_storage(item))
    if (POSTGRES_URL or CHROMA_URL) and not os.environ.get("KADAPT_TEST_SCALEOUT_ALL"):
        left_out = [item for item in items if item.nodeid in _storeless]
        if left_out:
            config.hook.pytest_deselected(items=left_out)
            items[:] = [item for item in items if item.nodeid not in _storeless]
    if not any(item.get_closest_marker("gpu") for item in items):
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)


def _slow_files_first(items) -> None:
    """Order the test files by their number of ``slow`` tests, most first (a stable sort: each file's tests stay
    together and in order). The worker processes take a whole file at a time in this order (`make test` passes
    ``--no-loadscope-reorder``), so the longest files start early instead of finishing the run on one worker."""
    slow = Counter(item.path for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[item.path])


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    _running[0] = item  # before any fixture of the test is set up, module- and package-scoped ones included


def pytest_runtest_teardown(item):
    _running[0] = None


def pytest_report_header(config):
    if POSTGRES_URL or CHROMA_URL:
        return (
            f"kadapt scale-out: catalog on {POSTGRES_URL or 'SQLite'}, vectors on {CHROMA_URL or 'embedded Chroma'}; "
            "the tests that reach neither run in the first pass only (deselected here)"
        )
    return "kadapt: catalog on SQLite, embedded Chroma"


def close_clients() -> None:
    """Dispose of the catalog engines and vector-store clients this process opened."""
    from kadapt.catalog import close_catalogs
    from kadapt.store import close_stores

    close_catalogs()
    close_stores()


def clear_caches() -> None:
    from kadapt.plugins import get_plugins
    from kadapt.settings import get_settings

    get_settings.cache_clear()
    get_plugins.cache_clear()


@contextmanager
def scaleout_databases(patch: pytest.MonkeyPatch) -> Iterator[None]:
    """In the scale-out configuration (``.ci/scaleout``), a database of its own on the PostgreSQL and the
    Chroma server, set in ``patch``'s environment and dropped at the end; elsewhere nothing."""
    item = _running[0]
    if item is not None and item.nodeid in _storeless:
        raise RuntimeError(
            f"{item.nodeid} reaches the catalog or the vector store, but tests/conftest.py's reaches_storage() "
            "does not see it: the second CI pass would leave it out. Name the fixture in STORAGE_FIXTURES or the "
            "call in STORAGE_CALLS."
        )
    postgres_db = chroma_db = None
    try:
        if POSTGRES_URL:
            postgres_db = servers.create_postgres_database(POSTGRES_URL)
            patch.setenv("KADAPT_CATALOG_URL", servers.database_url(POSTGRES_URL, postgres_db))
        if CHROMA_URL:
            chroma_db = servers.create_chroma_database(CHROMA_URL)
            patch.setenv("KADAPT_CHROMA_URL", CHROMA_URL)
            patch.setenv("KADAPT_CHROMA_DATABASE", chroma_db)
        clear_caches()
        yield
    finally:
        clear_caches()
        close_clients()
        if postgres_db:
            servers.drop_postgres_database(POSTGRES_URL, postgres_db)
        if chroma_db:
            servers.drop_chroma_database(CHROMA_URL, chroma_db)


@contextmanager
def kadapt_settings(
    root: Path, allowed_roots: list[Path] | None = None, **settings: str
) -> Iterator[pytest.MonkeyPatch]:
    """For fixtures shared by a module or package: kadapt's settings as a fresh install has them (every
    ``KADAPT_*`` variable cleared but the test switches; replay and question-answer pairs off, as kadapt_env has
    them: TRAINING_TEST_SETTINGS), data under ``root/data``, connectors allowed to
    read ``allowed_roots`` (default ``root``) for KBs that no group owns and for those owned by the groups of
    ``PRINCIPALS`` (``group_allowances``), the shared models, ``settings`` (``KADAPT_*`` name -> value), and in
    the scale-out configuration its own PostgreSQL and Chroma databases. Yields the monkeypatch."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith("KADAPT_") and not name.startswith(("KADAPT_TEST_", "KADAPT_SKIP_")):
                patch.delenv(name)
        patch.setenv("KADAPT_DATA_DIR", str(root / "data"))
        patch.setenv("KADAPT_ALLOWED_ROOTS", ",".join(str(path) for path in allowed_roots or [root]))
        patch.setenv("KADAPT_GROUP_ALLOWANCES", group_allowances(allowed_roots or [root]))
        patch.setenv("KADAPT_MODELS_DIR", str(MODELS_DIR))
        patch.setenv("KADAPT_PRECISION", TEST_PRECISION)
        for name, value in TRAINING_TEST_SETTINGS.items():  # as kadapt_env has them
            patch.setenv(name, value)
        for name, value in settings.items():
            patch.setenv(name, value)
        with scaleout_databases(patch):
            yield patch


def group_allowances(roots: list[Path]) -> str:
    """KADAPT_GROUP_ALLOWANCES letting KBs owned by any group of ``PRINCIPALS`` read ``roots``."""
    import json

    groups = sorted({group for _, groups in PRINCIPALS.values() for group in groups})
    return json.dumps({group: {"roots": [str(root) for root in roots]} for group in groups})


# every data dir would have the base model answer the replay prompts anew, and the question-answer pairs multiply
# the training steps of each test that trains: tests/pipeline/test_chat_adapters.py turns both on
TRAINING_TEST_SETTINGS = {"KADAPT_ADAPT_REPLAY": "0", "KADAPT_ADAPT_QA_PAIRS": "false"}
SET_BY_KADAPT_ENV = (
    "KADAPT_DATA_DIR",
    "KADAPT_ALLOWED_ROOTS",
    "KADAPT_GROUP_ALLOWANCES",
    "KADAPT_MODELS_DIR",
    "KADAPT_ADAPT_REPLAY",
    "KADAPT_ADAPT_QA_PAIRS",
    "KADAPT_PRECISION",
)
HARNESS_VARIABLES = ("KADAPT_SKIP_BROWSER",)


@pytest.fixture
def kadapt_env(tmp_path, monkeypatch):
    """Point kadapt at a fresh data dir; allow connectors to read under ``tmp_path``."""
    data = tmp_path / "data"
    monkeypatch.setenv("KADAPT_DATA_DIR", str(data))
    monkeypatch.setenv("KADAPT_ALLOWED_ROOTS", str(tmp_path))
    monkeypatch.setenv("KADAPT_GROUP_ALLOWANCES", group_allowances([tmp_path]))
    monkeypatch.setenv("KADAPT_MODELS_DIR", str(MODELS_DIR))
    monkeypatch.setenv("KADAPT_PRECISION", TEST_PRECISION)
    for name, value in TRAINING_TEST_SETTINGS.items():
        monkeypatch.setenv(name, value)
    # every other setting of the shell is cleared: a test sees kadapt's defaults, whatever the machine sets
    # (KADAPT_TEST_* and KADAPT_SKIP_BROWSER steer the tests themselves; KADAPT_TEST_KEEP_<NAME>=1 keeps one)
    kept = set(SET_BY_KADAPT_ENV) | set(HARNESS_VARIABLES)
    for name in list(os.environ):
        if not name.startswith("KADAPT_") or name.startswith("KADAPT_TEST_") or name in kept:
            continue
        if not os.environ.get("KADAPT_TEST_KEEP_" + name.removeprefix("KADAPT_")):
            monkeypatch.delenv(name)
    with scaleout_databases(monkeypatch):
        yield tmp_path


@pytest.fixture
def empty_catalog_url(tmp_path):
    """The URL of an empty database (no tables) of the configured kind: SQLite, or PostgreSQL in scale-out."""
    if not POSTGRES_URL:
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    name = servers.create_postgres_database(POSTGRES_URL, template="template0")
    yield servers.database_url(POSTGRES_URL, name)
    close_clients()
    servers.drop_postgres_database(POSTGRES_URL, name)


@pytest.fixture
def catalog(kadapt_env):
    from kadapt.catalog import open_catalog

    return open_catalog()


@pytest.fixture
def store(kadapt_env):
    from kadapt.store import get_store

    return get_store()


def run_kadapt(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run the real ``kadapt`` command line in a subprocess; ``timeout`` only guards against a hang (a whole
    ``adapt`` takes about 110 s alone on 2 cores and three times that beside another test and CI's servers)."""
    return subprocess.run(
        [sys.executable, "-m", "kadapt.cli", *args],
        capture_output=True,
        text=True,
        env=(env or dict(os.environ)) | {"COLUMNS": "200", "NO_COLOR": "1"},
        cwd=cwd,
        timeout=timeout,
    )


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """``kadapt serve`` in a subprocess on 127.0.0.1, stopped at the end."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(Path(env["KADAPT_DATA_DIR"]).parent / f"server-{self.port}.log", "w+")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kadapt.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                *args,
            ],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self._wait()

    def _wait(self) -> None:
        import time

        import httpx

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"kadapt serve exited: {self.output()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError(f"kadapt serve did not start: {self.output()}")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def build_handbook(catalog, settings, slug: str = "handbook", **kb_options) -> None:
    """The sample handbook KB, synced for real."""
    from kadapt.kbs import add_source, create_kb
    from kadapt.sync import sync_kb

    create_kb(catalog, slug, title="Northwind Robotics handbook", **kb_options)
    add_source(catalog, settings, slug, "files", {"path": str(REPO / "samples" / "handbook")})
    stats = sync_kb(catalog, slug)
    assert stats.failed == 0 and stats.added >= 8


def issue_keys(catalog, settings, principals: dict[str, tuple[str, list[str]]]) -> dict[str, str]:
    """An API key per principal (name -> (role, groups)), each named after its principal."""
    from kadapt.auth import create_key

    return {
        name: create_key(catalog, settings, role=role, groups=groups, name=name)[0]
        for name, (role, groups) in principals.items()
    }


@dataclass
class HandbookServer:
    """``kadapt serve`` on 127.0.0.1 over the synced sample handbook (read by "staff", owned by "hr"), with an
    API key per principal; ``env`` is the server's environment, ``root`` the data's parent folder."""

    server: Server
    keys: dict[str, str]
    env: dict[str, str]
    root: Path
    catalog: Any
    settings: Any

    @property
    def url(self) -> str:
        return self.server.url


@contextmanager
def handbook_server(
    root: Path,
    principals: dict[str, tuple[str, list[str]]],
    *,
    allowed_roots: list[Path] | None = None,
    setup: Callable[[Any, Any], None] | None = None,
    settings: dict[str, str] | None = None,
) -> Iterator[HandbookServer]:
    """The one live server of the end-to-end tests (API, console): fresh settings under ``root`` (with
    ``settings``, ``KADAPT_*`` name -> value), the handbook KB, ``setup(catalog, settings)`` for anything more,
    keys for ``principals``, then the server."""
    with kadapt_settings(root, allowed_roots or [REPO / "samples"], **(settings or {})):
        from kadapt.catalog import open_catalog
        from kadapt.settings import get_settings

        settings = get_settings()
        catalog = open_catalog(settings)
        build_handbook(catalog, settings, reader_groups=["staff"], owner_groups=["hr"])
        if setup is not None:
            setup(catalog, settings)
        keys = issue_keys(catalog, settings, principals)
        env = dict(os.environ)
        server = Server(env)
        try:
            yield HandbookServer(server, keys, env, root, catalog, settings)
        finally:
            server.stop()
