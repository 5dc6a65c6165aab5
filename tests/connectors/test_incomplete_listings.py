"""A sync whose source could not be listed in full deletes nothing, and says why (a security review's finding 9).

Real parts throughout: the loopback test site, real folders, a real git repository, SQLite and Chroma.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from kadapt.catalog import Document, DocumentError, Snapshot
from kadapt.kbs import add_source, create_kb
from kadapt.sync import sync_kb
from tests.connectors.test_git import make_repo
from tests.connectors.webserver import Site

REPO_ROOT = Path(__file__).resolve().parents[2]


def held(catalog) -> set[str]:
    with catalog.session() as session:
        return set(session.scalars(select(Document.locator)))


def snapshots(catalog) -> int:
    with catalog.session() as session:
        return len(list(session.scalars(select(Snapshot.id))))


def document_errors(catalog) -> dict[str, str]:
    with catalog.session() as session:
        return {error.locator: error.message for error in session.scalars(select(DocumentError))}


def settings():
    from kadapt.settings import get_settings

    return get_settings()


@pytest.fixture
def site(kadapt_env, monkeypatch):
    monkeypatch.setenv("KADAPT_ALLOW_PRIVATE_NETWORKS", "true")
    from kadapt.settings import get_settings

    get_settings.cache_clear()
    with Site() as running:
        running.html("/", "Intranet", '<a href="/hr">HR</a> <a href="/it">IT</a><p>Welcome to the intranet.</p>')
        running.html("/hr", "HR", "<p>Leave requests go through Workday.</p>")
        running.html("/it", "IT", "<p>The service desk answers at extension 199.</p>")
        yield running


@pytest.fixture
def web_kb(catalog, site):
    create_kb(catalog, "intranet")
    add_source(catalog, settings(), "intranet", "web", {"url": site.base + "/"})
    first = sync_kb(catalog, "intranet")
    assert (first.added, first.source_errors) == (3, [])
    return "intranet"


def pages(site, *paths) -> set[str]:
    return {site.base + path for path in paths}


def test_a_start_page_answering_404_deletes_nothing_and_says_why(catalog, site, web_kb):
    """The reproduction: 3 pages synced, the start page answers 404, the next sync used to say `deleted: 2`."""
    before = snapshots(catalog)
    site.html("/", "Gone", "<p>not found</p>", status=404)
    stats = sync_kb(catalog, web_kb)
    assert (stats.deleted, stats.chunks_deleted, stats.snapshot_created) == (0, 0, False)
    assert held(catalog) == pages(site, "/", "/hr", "/it")
    assert snapshots(catalog) == before
    [error] = stats.source_errors
    assert "listing incomplete" in error and "start page failed (HTTP 404" in error, error
    assert "HTTP 404" in document_errors(catalog)[site.base + "/"]  # the start page keeps its last version

    site.html("/", "Intranet", '<a href="/hr">HR</a><p>Welcome back.</p>')  # back, and /it no longer linked
    stats = sync_kb(catalog, web_kb)
    assert (stats.source_errors, stats.updated, stats.deleted) == ([], 1, 1)  # a normal sync again
    assert held(catalog) == pages(site, "/", "/hr")
    assert document_errors(catalog) == {}


def test_a_sync_job_with_an_incomplete_listing_fails_and_its_log_says_why(catalog, site, web_kb):
    from kadapt.jobs import get_job, submit
    from kadapt.kbs import get_kb

    site.html("/", "Down", "<p>maintenance</p>", status=503)
    job = get_job(catalog, submit(catalog, "sync", kb_id=get_kb(catalog, web_kb).id, params={"kb": web_kb}))
    assert job.state == "failed"
    assert "listing incomplete, so no document was deleted" in job.error and "HTTP 503" in job.error
    assert job.result["deleted"] == 0 and job.result["source_errors"] == [job.error]
    assert "listing incomplete: the start page failed (HTTP 503" in job.log
    assert held(catalog) == pages(site, "/", "/hr", "/it")


@pytest.mark.parametrize("status", [401, 403, 500])
def test_robots_txt_that_fails_deletes_nothing(catalog, site, web_kb, status):
    site.raw("/robots.txt", "text/plain", b"sign in first", status=status)
    site.requests.clear()
    stats = sync_kb(catalog, web_kb)
    assert stats.deleted == 0 and not stats.snapshot_created
    assert held(catalog) == pages(site, "/", "/hr", "/it")
    [error] = stats.source_errors
    assert f"robots.txt could not be read (HTTP {status}" in error, error
    assert site.requests == ["/robots.txt"]  # no page is crawled without knowing the rules


def test_robots_txt_redirecting_to_a_sign_in_host_deletes_nothing(catalog, site, web_kb):
    site.redirect("/robots.txt", "https://sso.example.com/login?next=/robots.txt")  # never followed
    stats = sync_kb(catalog, web_kb)
    assert stats.deleted == 0
    assert held(catalog) == pages(site, "/", "/hr", "/it")
    [error] = stats.source_errors
    assert "robots.txt could not be read (redirects to another host" in error, error


def test_a_page_that_answers_404_while_still_linked_is_deleted(catalog, site, web_kb):
    site.html("/it", "Gone", "<p>not found</p>", status=404)  # the start page still links /it
    stats = sync_kb(catalog, web_kb)
    assert (stats.deleted, stats.source_errors, stats.snapshot_created) == (1, [], True)
    assert held(catalog) == pages(site, "/", "/hr")
    assert document_errors(catalog) == {}  # deleted, not kept forever as an error


@pytest.mark.parametrize("status", [401, 403, 500, 503])
def test_a_linked_page_that_fails_otherwise_keeps_its_last_version(catalog, site, web_kb, status):
    site.html("/it", "Down", "<p>try later</p>", status=status)
    stats = sync_kb(catalog, web_kb)
    assert stats.deleted == 0
    assert held(catalog) == pages(site, "/", "/hr", "/it")
    assert f"HTTP {status}" in document_errors(catalog)[site.base + "/it"]


def test_a_page_whose_links_could_not_be_read_keeps_the_pages_below_it(catalog, site, web_kb):
    site.html("/hr", "HR", '<p>Leave requests go through Workday.</p><a href="/hr/forms">forms</a>')
    site.html("/hr/forms", "Forms", "<p>Form HR-7 requests leave.</p>")
    assert sync_kb(catalog, web_kb).added == 1
    site.html("/hr", "HR", "<p>down</p>", status=502)
    stats = sync_kb(catalog, web_kb)
    assert stats.deleted == 0
    assert site.base + "/hr/forms" in held(catalog)
    [error] = stats.source_errors
    assert f"{site.base}/hr failed (HTTP 502" in error and "links were not followed" in error, error


def test_a_page_no_longer_linked_is_deleted(catalog, site, web_kb):
    site.html("/", "Intranet", '<a href="/hr">HR</a><p>Welcome to the intranet.</p>')
    stats = sync_kb(catalog, web_kb)
    assert (stats.deleted, stats.source_errors) == (1, [])
    assert held(catalog) == pages(site, "/", "/hr")


def test_a_crawl_cut_by_kadapt_max_web_pages_deletes_nothing(catalog, site, web_kb, monkeypatch):
    from kadapt.settings import get_settings

    monkeypatch.setenv("KADAPT_MAX_WEB_PAGES", "2")
    get_settings.cache_clear()
    stats = sync_kb(catalog, web_kb)
    assert stats.deleted == 0
    assert held(catalog) == pages(site, "/", "/hr", "/it")
    [error] = stats.source_errors
    assert "KADAPT_MAX_WEB_PAGES" in error, error


def test_a_source_s_own_max_pages_is_a_complete_listing(catalog, site, kadapt_env):
    """A source that asks for at most N pages holds the first N the crawl reaches: no error every sync."""
    create_kb(catalog, "small")
    add_source(catalog, settings(), "small", "web", {"url": site.base + "/", "max_pages": 2})
    stats = sync_kb(catalog, "small")
    assert (stats.added, stats.source_errors) == (2, [])


def write_folder(root: Path) -> Path:
    (root / "team").mkdir(parents=True)
    (root / "a.md").write_text("# Alpha\n\nThe alpha team ships robots on Mondays.\n")
    (root / "b.txt").write_text("Bravo handles invoices every Friday.\n")
    (root / "team" / "c.md").write_text("# Charlie\n\nCharlie runs the lab.\n")
    return root


def test_an_unmounted_folder_deletes_nothing(catalog, kadapt_env):
    root = write_folder(kadapt_env / "share")
    create_kb(catalog, "share")
    add_source(catalog, settings(), "share", "files", {"path": str(root)})
    assert sync_kb(catalog, "share").added == 3
    before = snapshots(catalog)
    root.rename(kadapt_env / "elsewhere")  # the share is unmounted: its folder is gone
    stats = sync_kb(catalog, "share")
    assert (stats.deleted, stats.snapshot_created) == (0, False)
    assert held(catalog) == {"a.md", "b.txt", "team/c.md"} and snapshots(catalog) == before
    assert len(stats.source_errors) == 1 and "is not a folder" in stats.source_errors[0]
    (kadapt_env / "elsewhere").rename(root)
    assert sync_kb(catalog, "share").source_errors == []


def test_an_empty_folder_that_is_there_is_a_complete_listing(catalog, kadapt_env):
    """The documented choice: a present, readable, empty folder means the documents were removed."""
    root = write_folder(kadapt_env / "share")
    create_kb(catalog, "share")
    add_source(catalog, settings(), "share", "files", {"path": str(root)})
    sync_kb(catalog, "share")
    shutil.rmtree(root)
    root.mkdir()
    stats = sync_kb(catalog, "share")
    assert (stats.deleted, stats.source_errors) == (3, [])


def _list_unprivileged(root: Path, work: Path) -> list[list[str]]:
    """List ``root`` with the files connector in a process that file permissions bind (root's override of
    them is dropped from the capability bounding set when the tests run as root)."""
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from kadapt.connectors import ListingIncomplete\n"
        "from kadapt_files import FilesConnector\n"
        "from tests.connectors.conformance import SourceUnderTest, load\n"
        "items = load(SourceUnderTest(FilesConnector, {'path': sys.argv[1]}, Path(sys.argv[2]), None, None, None))\n"
        "print(json.dumps([[type(i).__name__, i.reason if isinstance(i, ListingIncomplete) else "
        "getattr(i, 'locator', None) or i.metadata['locator']] for i in items]))\n"
    )
    command = [sys.executable, "-c", script, str(root), str(work)]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: file permissions cannot be made to apply")
        command = [setpriv, "--bounding-set", "-dac_override,-dac_read_search", *command]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("locked", ["team", "."])
def test_a_folder_that_cannot_be_listed_makes_the_listing_incomplete(kadapt_env, locked):
    root = write_folder(kadapt_env / "share")
    target = root / locked
    target.chmod(0)
    try:
        items = _list_unprivileged(root, kadapt_env / "work")
    finally:
        target.chmod(0o755)
    reasons = [value for kind, value in items if kind == "ListingIncomplete"]
    assert len(reasons) == 1, items
    assert ("the folder itself" if locked == "." else "folder 'team'") in reasons[0]
    assert "Permission denied" in reasons[0]
    if locked == "team":
        assert sorted(value for kind, value in items if kind == "Document") == ["a.md", "b.txt"]


@pytest.mark.parametrize("outage", ["moved away", "no longer a repository"])
def test_a_git_remote_that_cannot_be_fetched_deletes_nothing(catalog, kadapt_env, outage):
    repo = make_repo(kadapt_env / "repo")
    create_kb(catalog, "wiki")
    add_source(catalog, settings(), "wiki", "git", {"url": str(repo)})
    assert sync_kb(catalog, "wiki").added == 3
    if outage == "moved away":
        repo.rename(kadapt_env / "moved")
    else:  # the folder is there, but no repository any more
        shutil.rmtree(repo / ".git")
    stats = sync_kb(catalog, "wiki")
    assert (stats.deleted, stats.snapshot_created) == (0, False)
    assert held(catalog) == {"README.md", "docs/deploy.md", "docs/oncall.txt"}
    [error] = stats.source_errors
    assert ("no repository at" if outage == "moved away" else "no git repository at") in error, error


def test_a_git_subdir_that_is_gone_fails_the_source_instead_of_listing_nothing(catalog, kadapt_env):
    repo = make_repo(kadapt_env / "repo")
    create_kb(catalog, "wiki")
    add_source(catalog, settings(), "wiki", "git", {"url": str(repo), "subdir": "docs"})
    assert sync_kb(catalog, "wiki").added == 2
    from tests.connectors.test_git import commit

    shutil.rmtree(repo / "docs")
    (repo / "handbook").mkdir()
    (repo / "handbook" / "deploy.md").write_text("# Deploying\n\nMoved here.\n")
    commit(repo, "rename docs/ to handbook/")
    stats = sync_kb(catalog, "wiki")
    assert stats.deleted == 0
    assert held(catalog) == {"docs/deploy.md", "docs/oncall.txt"}
    assert len(stats.source_errors) == 1 and "no folder 'docs'" in stats.source_errors[0]


def test_a_jsonl_file_that_is_gone_deletes_nothing(catalog, kadapt_env):
    path = kadapt_env / "docs.jsonl"
    path.write_text("".join(json.dumps({"id": name, "text": f"{name} text."}) + "\n" for name in ("a", "b")))
    create_kb(catalog, "import")
    add_source(catalog, settings(), "import", "jsonl", {"path": str(path)})
    assert sync_kb(catalog, "import").added == 2
    path.rename(kadapt_env / "moved.jsonl")
    stats = sync_kb(catalog, "import")
    assert stats.deleted == 0 and held(catalog) == {"a", "b"}
    assert len(stats.source_errors) == 1 and "is not a file" in stats.source_errors[0]


def test_a_start_page_that_answers_200_but_cannot_be_read_deletes_nothing(catalog, site, web_kb):
    """A sign-in service answering the start page with 200 and JSON: nothing to parse, no link followed."""
    site.raw("/", "application/json", b'{"login": "https://sso.example/"}')
    stats = sync_kb(catalog, web_kb)
    assert (stats.deleted, stats.snapshot_created) == (0, False)
    assert held(catalog) == pages(site, "/", "/hr", "/it")
    [error] = stats.source_errors
    assert "listing incomplete" in error and "could not be read" in error, error


def test_a_jsonl_file_that_fails_part_way_keeps_the_lines_not_read(catalog, kadapt_env, monkeypatch):
    """The disk (or the share) fails after the first line: the later lines' documents stay, and the sync says
    why. The read error is simulated where the file is read; the rest is real."""
    import errno

    import kadapt_jsonl

    path = kadapt_env / "docs.jsonl"
    path.write_text("".join(json.dumps({"id": name, "text": f"{name} text."}) + "\n" for name in ("a", "b", "c")))
    create_kb(catalog, "import")
    add_source(catalog, settings(), "import", "jsonl", {"path": str(path)})
    assert sync_kb(catalog, "import").added == 3
    real = kadapt_jsonl._bounded_lines

    def failing(lines, limit):
        for index, line in enumerate(real(lines, limit)):
            if index == 1:
                raise OSError(errno.EIO, "Input/output error")
            yield line

    monkeypatch.setattr(kadapt_jsonl, "_bounded_lines", failing)
    stats = sync_kb(catalog, "import")
    assert (stats.deleted, stats.snapshot_created) == (0, False)
    assert held(catalog) == {"a", "b", "c"}
    [error] = stats.source_errors
    assert "failed part-way" in error and "Input/output error" in error, error
