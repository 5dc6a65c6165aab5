"""The connector attack corpus: sources an editor could add to reach what their group may not, each refused
through the API with a clear error, before any connection is opened or any file read.

The editor is ``editor_owner`` (group "hr") on a KB owned by "hr"; "hr" may read the package's root, which
holds kadapt's data directory (as a careless root would), and may reach no private host. Rows that need a
connection attempt to show what they show (redirect chains, DNS rebinding of ssh and git remotes) follow the
table.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from tests.connectors.webserver import Site
from tests.security.conftest import rebind_dns


def _git(*args, cwd):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def targets(env) -> dict[str, str]:
    """Things under the allowed root an attacker aims at: kadapt's data (another source's mirror, the
    catalog), a symlink into it, and repositories whose git dir or alternates lead into it."""
    data = env.settings.data_dir
    mirror = data / "sources" / "999999" / "mirror.git"  # another KB's git mirror
    mirror.mkdir(parents=True, exist_ok=True)
    _git("init", "--bare", "-q", str(mirror), cwd=env.root)
    (data / "export.jsonl").write_text('{"id": "x", "text": "secret"}\n')
    attack = env.root / "attack"
    attack.mkdir(exist_ok=True)
    link = attack / "data-link"
    if not link.is_symlink():
        link.symlink_to(data)
    worktree = attack / "worktree"  # a checkout whose .git file names the mirror as its git dir
    worktree.mkdir(exist_ok=True)
    (worktree / ".git").write_text(f"gitdir: {mirror}\n")
    borrower = attack / "borrower.git"  # a repository that borrows the mirror's objects
    if not borrower.exists():
        _git("init", "--bare", "-q", str(borrower), cwd=env.root)
        (borrower / "objects" / "info" / "alternates").write_text(f"{mirror / 'objects'}\n")
    return {
        "data": str(data),
        "mirror": str(mirror),
        "dotdot": f"{env.docs}/../data/sources",
        "link": str(link),
        "jsonl": str(data / "export.jsonl"),
        "worktree": str(worktree),
        "borrower": str(borrower),
    }


# (name, kind, config, status, words the error must hold); {name} is filled from ``targets``
CORPUS = [
    # option injection and remote helpers (finding 1's checks, kept in the corpus)
    ("url-option", "git", {"url": "--upload-pack=touch /tmp/kadapt-pwned;@203.0.113.9:x"}, 400, "start with '-'"),
    ("ref-option", "git", {"url": "https://example.com/r.git", "ref": "--output=/tmp/x"}, 400, "start with '-'"),
    ("subdir-option", "git", {"url": "https://example.com/r.git", "subdir": "-C"}, 400, "start with '-'"),
    ("ext-helper", "git", {"url": "ext::sh -c touch% /tmp/kadapt-pwned"}, 400, "remote helpers"),
    ("fd-helper", "git", {"url": "fd::17"}, 400, "remote helpers"),
    # IPv6 addresses that carry a private IPv4 one, and site-local IPv6
    ("nat64-loopback", "web", {"url": "http://[64:ff9b::7f00:1]/"}, 403, "carrying 127.0.0.1"),
    ("nat64-private", "web", {"url": "http://[64:ff9b::a00:1]/"}, 403, "carrying 10.0.0.1"),
    ("nat64-local-use", "web", {"url": "http://[64:ff9b:1::a00:1]/"}, 403, "reserved address"),
    ("6to4-loopback", "web", {"url": "http://[2002:7f00:1::1]/"}, 403, "carrying 127.0.0.1"),
    ("6to4-metadata", "web", {"url": "http://[2002:a9fe:a9fe::]/latest/"}, 403, "carrying 169.254.169.254"),
    ("ipv4-compatible", "web", {"url": "http://[::127.0.0.1]/"}, 403, "carrying 127.0.0.1"),
    ("ipv4-translated", "web", {"url": "http://[::ffff:0:a00:1]/"}, 403, "carrying 10.0.0.1"),
    ("site-local", "web", {"url": "http://[fec0::1]/"}, 403, "reserved address"),
    ("teredo", "web", {"url": "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/"}, 403, "reserved address"),
    ("sitemap-nat64", "web", {"sitemap": "http://[64:ff9b::7f00:1]/sitemap.xml"}, 403, "carrying 127.0.0.1"),
    ("git-https-nat64", "git", {"url": "https://[64:ff9b::7f00:1]/r.git"}, 403, "carrying 127.0.0.1"),
    ("git-ssh-6to4", "git", {"url": "ssh://git@[2002:a00:1::]/r.git"}, 403, "carrying 10.0.0.1"),
    ("git-scp-compatible", "git", {"url": "git@[0:0:0:0:0:0:a00:1]:team/r.git"}, 403, "carrying 10.0.0.1"),
    ("git-daemon-site-local", "git", {"url": "git://[fec0::5]/r.git"}, 403, "reserved address"),
    # kadapt's data directory, under the allowed root: directly, through '..', a symlink, git indirections
    ("files-data-dir", "files", {"path": "{data}"}, 403, "data directory"),
    ("files-dotdot", "files", {"path": "{dotdot}"}, 403, "data directory"),
    ("files-symlink", "files", {"path": "{link}"}, 403, "data directory"),
    ("jsonl-data-dir", "jsonl", {"path": "{jsonl}"}, 403, "data directory"),
    ("git-mirror-path", "git", {"url": "{mirror}"}, 403, "data directory"),
    ("git-mirror-file-url", "git", {"url": "file://{mirror}"}, 403, "data directory"),
    ("git-gitdir-file", "git", {"url": "{worktree}"}, 403, "reads objects from elsewhere"),
    ("git-alternates", "git", {"url": "{borrower}"}, 403, "reads objects from elsewhere"),
    # a folder outside the group's roots; a web timeout past the cap
    ("files-other-root", "files", {"path": "/etc"}, 403, "KB owned by hr"),
    ("web-timeout", "web", {"url": "https://example.com/", "timeout": 86400}, 400, "less than or equal to 120"),
    # credentials travel only in the operator's credentials files, never in a source's stored config
    ("web-inline-credentials", "web", {"url": "https://example.com/", "headers": {"Cookie": "s=1"}}, 400, "headers"),
    ("s3-inline-key", "s3", {"bucket": "handbook", "secret_access_key": "s3cr3t"}, 400, "secret_access_key"),
    ("s3-endpoint-userinfo", "s3", {"bucket": "handbook", "endpoint": "https://k:s@example.com"}, 400, "credentials"),
    # S3 endpoints are checked as web URLs are: the metadata service, loopback and private ranges
    ("s3-metadata", "s3", {"bucket": "handbook", "endpoint": "http://169.254.169.254"}, 403, "169.254.169.254"),
    ("s3-nat64-loopback", "s3", {"bucket": "handbook", "endpoint": "http://[64:ff9b::7f00:1]"}, 403, "127.0.0.1"),
    ("s3-bucket-option", "s3", {"bucket": "--endpoint-url=http://10.0.0.1"}, 400, "not an S3 bucket name"),
    ("s3-bucket-path", "s3", {"bucket": "handbook/../../other"}, 400, "not an S3 bucket name"),
    (
        "confluence-metadata",
        "confluence",
        {"url": "http://169.254.169.254/wiki", "space": "HR"},
        403,
        "169.254.169.254",
    ),
    ("confluence-6to4", "confluence", {"url": "https://[2002:a00:1::]/wiki", "space": "HR"}, 403, "10.0.0.1"),
    (
        "confluence-inline-token",
        "confluence",
        {"url": "https://x.example/wiki", "space": "HR", "token": "t"},
        400,
        "token",
    ),
    ("confluence-page-path", "confluence", {"url": "https://x.example/wiki", "root_page": "1/../x"}, 400, "number"),
    (
        "sharepoint-metadata",
        "sharepoint",
        {"site": "x.sharepoint.com", "graph_url": "http://169.254.169.254/v1.0"},
        403,
        "169.254.169.254",
    ),
    ("sharepoint-folder-dotdot", "sharepoint", {"site": "x.sharepoint.com", "folder": "a/../../b"}, 400, "segment"),
    (
        "sharepoint-inline-secret",
        "sharepoint",
        {"site": "x.sharepoint.com", "client_secret": "s"},
        400,
        "client_secret",
    ),
    ("gdrive-query-injection", "gdrive", {"folder": "x' in parents or name contains '"}, 400, "a Drive id is"),
    ("gdrive-metadata", "gdrive", {"folder": "abc", "api_url": "http://169.254.169.254"}, 403, "169.254.169.254"),
    ("gdrive-inline-key", "gdrive", {"folder": "abc", "private_key": "-----BEGIN"}, 400, "private_key"),
]


def _fill(value, names):
    if isinstance(value, str):
        return value.format(**names)
    return {key: _fill(item, names) for key, item in value.items()} if isinstance(value, dict) else value


@pytest.mark.parametrize(("name", "kind", "config", "status", "words"), CORPUS, ids=[row[0] for row in CORPUS])
def test_the_corpus_is_refused_with_a_clear_error_and_nothing_reached(
    env, make_kb, targets, no_network, name, kind, config, status, words
):
    from kadapt.kbs import list_sources

    kb = make_kb("corpus")["kb"]
    before = [source.id for source in list_sources(env.catalog, kb)]
    with env.client() as client:
        response = client.post(
            f"/v1/kbs/{kb}/sources",
            headers=env.headers("editor_owner"),
            json={"kind": kind, "config": _fill(config, targets)},
        )
    assert response.status_code == status, response.text
    assert words in response.json()["error"]["message"]
    assert [source.id for source in list_sources(env.catalog, kb)] == before  # nothing stored
    assert no_network == []  # no name resolved, no connection opened
    assert not Path("/tmp/kadapt-pwned").exists()


def test_the_guard_sees_a_connection(no_network):
    """The corpus's ``no_network == []`` can fail: an attempt is recorded."""
    with pytest.raises(AssertionError):
        socket.create_connection(("127.0.0.1", 9))
    assert len(no_network) == 1


def test_a_files_source_over_a_root_holding_the_data_dir_reads_none_of_it(env, targets):
    """A source over the whole root (allowed) lists everything but kadapt's data, which it reports unread."""
    from sqlalchemy import select

    from kadapt.catalog import Document, DocumentError
    from kadapt.kbs import add_source, create_kb
    from kadapt.sync import sync_kb

    slug = f"whole-root-{time.monotonic_ns()}"
    kb = create_kb(env.catalog, slug, owner_groups=["hr"])
    (Path(targets["data"]) / "notes.md").write_text("# Notes\n\nkadapt's own file: never a document.\n")
    add_source(env.catalog, env.settings, slug, "files", {"path": str(env.root)})
    stats = sync_kb(env.catalog, slug, settings=env.settings)
    with env.catalog.session() as session:
        errors = {
            row.locator: row.message
            for row in session.scalars(select(DocumentError).where(DocumentError.kb_id == kb.id))
        }
        locators = set(session.scalars(select(Document.locator).where(Document.kb_id == kb.id)))
    assert "data directory" in errors["data"]  # not entered
    assert "data directory" in errors["attack/data-link"]  # nor the symlink to it
    assert "docs/leave.md" in locators  # what lies outside the data directory was read
    assert not any(locator.startswith(("data/", "attack/data-link/")) for locator in locators)
    assert stats.added >= 1


# -- redirect chains --------------------------------------------------------------------------------------


def test_a_redirect_chain_to_private_addresses_gets_no_second_request(env):
    """A page that redirects (twice on its host, then to another loopback or private name) is not followed
    off the host: the second server never hears of it."""
    from kadapt.kbs import add_source, create_kb
    from kadapt.sync import sync_kb

    slug = f"redirects-{time.monotonic_ns()}"
    create_kb(env.catalog, slug)  # an admin's KB on a loopback test site: private networks allowed for it
    allowed = env.settings.model_copy(update={"allow_private_networks": True})
    with Site() as site, Site() as inner:
        inner.html("/", "Inner", "<p>Never to be read.</p>")
        port = inner.server.server_address[1]
        targets = [
            f"http://localhost:{port}/",
            f"http://[::ffff:127.0.0.1]:{port}/",
            f"http://[64:ff9b::7f00:1]:{port}/",
            f"http://169.254.169.254:{port}/latest/meta-data/",
        ]
        links = "".join(f'<a href="/hop{index}/a">{index}</a>' for index in range(len(targets)))
        site.html("/", "Start", f"<p>Start.</p>{links}")
        for index, target in enumerate(targets):
            site.redirect(f"/hop{index}/a", f"/hop{index}/b")
            site.redirect(f"/hop{index}/b", target)
        add_source(env.catalog, allowed, slug, "web", {"url": site.base + "/"})
        stats = sync_kb(env.catalog, slug, settings=allowed)
        assert inner.requests == []
        assert sum(1 for path in site.requests if path.startswith("/hop")) == 2 * len(targets)
    assert stats.added == 1 and stats.failed == len(targets)


# -- DNS rebinding of ssh and git:// remotes ---------------------------------------------------------------

# Stands in for the network outside the machine: ssh (as GIT_SSH_COMMAND) or git's proxy (GIT_PROXY_COMMAND)
# is run with a host to reach. A name is resolved as the rebinding DNS server answers after the check
# (127.0.0.1, so the connection reaches the loopback listener); an address is only recorded, never dialled.
FAKE_CONNECTOR = textwrap.dedent(
    """
    import json, os, socket, sys
    args = sys.argv[1:]
    if os.environ.get("FAKE_ROLE") == "ssh":
        options = dict(args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "-o")
        port = int(args[args.index("-p") + 1]) if "-p" in args else 22
        rest = [a for i, a in enumerate(args) if not a.startswith("-") and (i == 0 or args[i - 1] not in ("-o", "-p"))]
        host = options.get("HostName") or rest[0].split("@")[-1]
    else:
        host, port = args[0], int(args[1])
    with open(os.environ["FAKE_LOG"], "a") as log:
        log.write(json.dumps({"argv": args, "host": host}) + "\\n")
    if host == "rebind.example":
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    sys.exit(1)
    """
)


@pytest.fixture
def listener():
    """A loopback TCP listener that counts the connections it accepts."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    accepted: list[tuple] = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                connection, address = server.accept()
            except TimeoutError:
                continue
            accepted.append(address)
            connection.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join()
    server.close()


@pytest.fixture
def git_rebinding(monkeypatch, tmp_path):
    """``rebind.example`` answers 172.32.0.1 (public) while the git connector checks it, 127.0.0.1 afterwards;
    ``stable.example`` always answers 172.32.0.1. The fake ssh and proxy record what git asked them to reach."""
    from kadapt_git import GitConnector

    rebind_dns(monkeypatch, GitConnector, stable=("stable.example",))
    fake = tmp_path / "fake-connector"
    fake.write_text(f"#!{sys.executable}\n{FAKE_CONNECTOR}")
    fake.chmod(0o755)
    log = tmp_path / "connections.jsonl"
    monkeypatch.setenv("FAKE_LOG", str(log))
    monkeypatch.setenv("GIT_SSH_COMMAND", str(fake))  # the admin's ssh command: kadapt adds its options
    monkeypatch.setenv("GIT_SSH_VARIANT", "ssh")
    monkeypatch.setenv("GIT_PROXY_COMMAND", str(fake))
    return log


def _reached(log: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.mark.parametrize("scheme", ["ssh", "git"])
def test_ssh_and_git_remotes_that_rebind_to_loopback_reach_nothing(env, git_rebinding, listener, monkeypatch, scheme):
    from kadapt.kbs import add_source, create_kb
    from kadapt.sync import sync_kb

    monkeypatch.setenv("FAKE_ROLE", scheme)
    port, accepted = listener
    slug = f"rebind-{scheme}-{time.monotonic_ns()}"
    create_kb(env.catalog, slug, owner_groups=["hr"])
    url = f"ssh://git@rebind.example:{port}/team/r.git" if scheme == "ssh" else f"git://rebind.example:{port}/r.git"
    add_source(env.catalog, env.settings, slug, "git", {"url": url})  # checked: 172.32.0.1, public
    stats = sync_kb(env.catalog, slug, settings=env.settings)
    assert accepted == []  # nothing reached the loopback listener
    assert all(entry["host"] != "rebind.example" for entry in _reached(git_rebinding))
    assert stats.source_errors and "rebind.example resolves to 127.0.0.1" in stats.source_errors[0]


@pytest.mark.parametrize("scheme", ["ssh", "git"])
def test_ssh_and_git_remotes_are_pinned_to_the_checked_address(env, git_rebinding, listener, monkeypatch, scheme):
    from kadapt.kbs import add_source, create_kb
    from kadapt.sync import sync_kb

    monkeypatch.setenv("FAKE_ROLE", scheme)
    port, accepted = listener
    slug = f"pinned-{scheme}-{time.monotonic_ns()}"
    create_kb(env.catalog, slug, owner_groups=["hr"])
    url = f"ssh://git@stable.example:{port}/team/r.git" if scheme == "ssh" else f"git://stable.example:{port}/r.git"
    add_source(env.catalog, env.settings, slug, "git", {"url": url})
    sync_kb(env.catalog, slug, settings=env.settings)
    reached = _reached(git_rebinding)
    assert [entry["host"] for entry in reached] == ["172.32.0.1"]  # git and ssh resolved no name themselves
    if scheme == "ssh":
        assert "HostKeyAlias=stable.example" in reached[0]["argv"]  # known_hosts stays keyed by the name
        assert "git@stable.example" in reached[0]["argv"]  # ~/.ssh/config entries for the name still apply
    assert accepted == []


def test_the_fake_ssh_does_reach_the_listener_for_an_unpinned_name(git_rebinding, listener, monkeypatch, tmp_path):
    """The rebinding tests can fail: ssh handed the name (as before pinning) connects to the listener."""
    port, accepted = listener
    environment = {**os.environ, "FAKE_ROLE": "ssh", "GIT_TERMINAL_PROMPT": "0"}
    run = subprocess.run(
        ["git", "ls-remote", "--", f"ssh://git@rebind.example:{port}/r.git"],
        env=environment,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode != 0
    deadline = time.monotonic() + 30
    while not accepted and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(accepted) == 1
