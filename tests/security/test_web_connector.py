"""The web connector never reaches loopback, private or link-local addresses unless an admin allows it: a URL
is refused when the source is added, before any connection (no socket is even opened), and again at sync."""

from __future__ import annotations

import socket
import time

import pytest

from tests.connectors.webserver import Site
from tests.security.conftest import rebind_dns

PRIVATE = [
    "http://10.0.0.1/",
    "http://10.255.255.254:8080/wiki",
    "http://172.16.0.1/",
    "http://172.31.255.255/",
    "http://192.168.1.1/",
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata (link-local)
    "http://127.0.0.1:9/",
    "http://0.0.0.0/",
    "http://[::1]/",
    "http://[fe80::1]/",
    "http://[fd00::1]/",
    "http://[::ffff:127.0.0.1]/",  # IPv4-mapped loopback
    "https://[::ffff:10.0.0.1]/",
]


@pytest.fixture
def web_kb(env):
    from kadapt.kbs import create_kb

    slug = f"web-{time.monotonic_ns()}"
    create_kb(env.catalog, slug)
    return slug


@pytest.mark.parametrize("url", PRIVATE)
def test_private_addresses_are_refused_at_validation_without_a_connection(env, web_kb, no_network, url):
    from kadapt.errors import PermissionDenied
    from kadapt.kbs import add_source, list_sources

    with pytest.raises(PermissionDenied, match="KADAPT_ALLOW_PRIVATE_NETWORKS"):
        add_source(env.catalog, env.settings, web_kb, "web", {"url": url})
    with pytest.raises(PermissionDenied, match="loopback, private or reserved"):
        add_source(env.catalog, env.settings, web_kb, "web", {"sitemap": url + "sitemap.xml"})
    assert list_sources(env.catalog, web_kb) == []
    assert no_network == []


def test_172_32_is_a_public_address_and_passes_validation(env, web_kb, no_network):
    from kadapt.kbs import add_source
    from kadapt_web import check_public_host

    check_public_host("http://172.32.0.1/", allow_private=False)
    check_public_host("http://172.15.255.255/", allow_private=False)
    source = add_source(env.catalog, env.settings, web_kb, "web", {"url": "http://172.32.0.1/docs"})
    assert source.id and no_network == []  # validated only: nothing was fetched
    with pytest.raises(AssertionError):  # and the guard does see a connection when there is one
        socket.create_connection(("127.0.0.1", 9))
    assert len(no_network) == 1


def test_a_loopback_server_gets_no_request_from_the_api_or_a_sync(env, web_kb):
    from kadapt.jobs import TERMINAL_STATES, get_job
    from kadapt.kbs import add_source

    with Site() as site, env.client() as client:
        site.html("/", "Intranet", "<p>Internal only.</p>")
        refused = client.post(
            f"/v1/kbs/{web_kb}/sources",
            headers=env.headers("admin"),
            json={"kind": "web", "config": {"url": site.base + "/"}},
        )
        assert refused.status_code == 403
        assert "127.0.0.1 resolves to 127.0.0.1" in refused.json()["error"]["message"]

        # a source stored while private networks were allowed, synced after they no longer are
        allowed = env.settings.model_copy(update={"allow_private_networks": True})
        add_source(env.catalog, allowed, web_kb, "web", {"url": site.base + "/"})
        started = client.post(f"/v1/kbs/{web_kb}/sync", headers=env.headers("admin"))
        assert started.status_code == 202, started.text
        deadline = time.monotonic() + 120
        while (job := get_job(env.catalog, started.json()["id"])).state not in TERMINAL_STATES:
            assert time.monotonic() < deadline, job.message
            time.sleep(0.2)
        assert job.state == "failed"
        assert "KADAPT_ALLOW_PRIVATE_NETWORKS" in job.error
        assert site.requests == []


GIT_PRIVATE = [
    "https://10.0.0.1/team/handbook.git",
    "https://192.168.1.10:3000/handbook.git",
    "ssh://git@172.16.5.4/handbook.git",
    "git://127.0.0.1/handbook.git",
    "git@169.254.169.254:team/handbook.git",  # scp-like form
    "https://[fd00::1]/handbook.git",
]


@pytest.mark.parametrize("url", GIT_PRIVATE)
def test_git_remotes_on_private_hosts_are_refused_at_validation_without_a_connection(env, web_kb, no_network, url):
    from kadapt.errors import PermissionDenied
    from kadapt.kbs import add_source, list_sources

    with pytest.raises(PermissionDenied, match="KADAPT_ALLOW_PRIVATE_NETWORKS"):
        add_source(env.catalog, env.settings, web_kb, "git", {"url": url})
    assert list_sources(env.catalog, web_kb) == []
    assert no_network == []


@pytest.mark.parametrize("url", ["ext::sh -c touch% /tmp/pwned", "ftp://203.0.113.7/repo.git"])
def test_git_transports_other_than_https_ssh_and_git_are_refused(env, web_kb, no_network, url):
    from kadapt.errors import InvalidInput
    from kadapt.kbs import add_source

    # a remote helper is refused by the config's own check, another scheme by the connector's
    with pytest.raises(InvalidInput, match="not supported|are not allowed"):
        add_source(env.catalog, env.settings, web_kb, "git", {"url": url})
    assert no_network == []


def test_a_public_git_remote_passes_validation_without_being_fetched(env, web_kb, no_network):
    from kadapt.kbs import add_source

    source = add_source(env.catalog, env.settings, web_kb, "git", {"url": "https://172.32.0.1/team/handbook.git"})
    assert source.id and no_network == []


@pytest.fixture
def rebinding(monkeypatch):
    """``rebind.example`` answers a public address while a connector checks it and 127.0.0.1 afterwards,
    as a DNS server with a zero TTL can. Other names resolve as usual."""
    from kadapt_web import WebConnector

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):  # connections are direct, as on most servers
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    rebind_dns(monkeypatch, WebConnector)


def test_a_name_that_rebinds_to_loopback_after_the_check_gets_no_request(env, web_kb, rebinding):
    from kadapt.kbs import add_source
    from kadapt.sync import sync_kb

    with Site() as site:
        site.html("/", "Intranet", "<p>Internal only.</p>")
        port = site.server.server_address[1]
        add_source(env.catalog, env.settings, web_kb, "web", {"url": f"http://rebind.example:{port}/"})
        stats = sync_kb(env.catalog, web_kb, settings=env.settings)
        assert site.requests == []  # the page was never asked for: the connection was refused, not the content
    # robots.txt is the first request refused: nothing is crawled, and the source's error says why
    assert (stats.added, stats.failed) == (0, 0)
    [error] = stats.source_errors
    assert "robots.txt could not be read" in error and "rebind.example resolves to 127.0.0.1" in error, error


def test_git_fetches_are_pinned_to_the_checked_addresses_and_follow_no_redirect(monkeypatch, tmp_path):
    import os
    import subprocess

    from kadapt.errors import PermissionDenied
    from kadapt.network import git_pin_config

    answers = {"git.example": "172.32.0.1", "inside.example": "10.1.2.3"}

    def getaddrinfo(host, port, *args, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], port or 0))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    pin = git_pin_config("https://git.example/team/handbook.git", allow_private=False)

    def git_config(key):  # what git itself reads from the pin, without touching a network or a repository
        run = subprocess.run(
            ["git", "config", "--get", key], env={**os.environ, **pin}, cwd=tmp_path, capture_output=True, text=True
        )
        return run.stdout.strip()

    assert git_config("http.curloptResolve") == "git.example:443:172.32.0.1"
    assert git_config("http.followRedirects") == "false"
    assert git_pin_config("ssh://git@git.example/handbook.git", allow_private=False) == {
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "http.followRedirects",
        "GIT_CONFIG_VALUE_0": "false",
    }
    assert git_pin_config("https://inside.example/handbook.git", allow_private=True) == {}
    with pytest.raises(PermissionDenied, match="inside.example resolves to 10.1.2.3"):
        git_pin_config("https://inside.example/handbook.git", allow_private=False)
