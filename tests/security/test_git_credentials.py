"""Finding 3 of the security review, git credentials: a KB that groups own fetches its git sources with those
groups' credentials only. The server's own (~/.netrc, ~/.git-credentials through a credential helper in
~/.gitconfig, ssh keys and agent) are the admin's and serve only KBs that no group owns.

A real git fetches over dumb HTTP from a loopback server that wants Basic auth, and the server's HOME holds
valid credentials for it, so a group KB that could reach them would sync."""

from __future__ import annotations

import base64
import http.server
import json
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from kadapt.settings import GroupAllowance
from tests.connectors.test_git import make_repo

ADMIN = ("admin", "admin-token")
HR = ("hr", "hr-token")


def _git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def git_server(tmp_path):
    """A bare repository served over dumb HTTP on 127.0.0.1 to the users ADMIN and HR (Basic auth)."""
    make_repo(tmp_path / "work")
    bare = tmp_path / "served" / "repo.git"
    _git("clone", "-q", "--bare", str(tmp_path / "work"), str(bare), cwd=tmp_path)
    _git("update-server-info", cwd=bare)
    valid = {"Basic " + base64.b64encode(f"{user}:{password}".encode()).decode() for user, password in (ADMIN, HR)}
    seen: list[str | None] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(bare.parent), **kwargs)

        def do_GET(self):
            auth = self.headers.get("Authorization")
            seen.append(auth)
            if auth not in valid:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="git"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/repo.git", seen
    server.shutdown()
    server.server_close()


@pytest.fixture
def admin_home(tmp_path, monkeypatch, git_server):
    """The server's HOME with the admin's valid credentials for the repository, as git finds them by itself."""
    url, _ = git_server
    host = url.split("/")[2]
    home = tmp_path / "home"
    home.mkdir()
    (home / ".netrc").write_text(f"machine 127.0.0.1 login {ADMIN[0]} password {ADMIN[1]}\n")
    (home / ".netrc").chmod(0o600)
    (home / ".git-credentials").write_text(f"http://{ADMIN[0]}:{ADMIN[1]}@{host}\n")
    (home / ".gitconfig").write_text("[credential]\n\thelper = store\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    return home


def _settings(env, tmp_path, url: str = "http://127.0.0.1/"):
    hr_credentials = tmp_path / "hr.credentials"
    hr_credentials.write_text(f"http://{HR[0]}:{HR[1]}@{url.split('/')[2]}\n")
    allowances = dict(env.settings.group_allowances)
    allowances["hr"] = GroupAllowance(private_networks=True, git_credentials=hr_credentials)
    allowances["eng"] = GroupAllowance(private_networks=True)
    return env.settings.model_copy(
        update={
            "group_allowances": allowances,
            "allow_private_networks": True,
            "git_protocols": ["https", "http", "ssh", "git", "file"],
        }
    )


def _sync(env, settings, slug: str, owner_groups: list[str], url: str):
    from kadapt.kbs import add_source, create_kb
    from kadapt.sync import sync_kb

    create_kb(env.catalog, slug, owner_groups=owner_groups)
    add_source(env.catalog, settings, slug, "git", {"url": url, "ref": "main"})
    return sync_kb(env.catalog, slug, settings=settings)


def test_the_servers_own_credentials_work_for_a_kb_no_group_owns(env, git_server, admin_home, tmp_path):
    """The setup can fail the other tests: git really uses the HOME credentials when nothing stops it."""
    url, seen = git_server
    stats = _sync(env, _settings(env, tmp_path, url), f"admin-git-{uuid.uuid4().hex[:8]}", [], url)
    assert not stats.source_errors, stats.source_errors
    assert stats.added >= 2


def test_a_group_without_credentials_never_fetches_with_the_servers(env, git_server, admin_home, tmp_path):
    url, seen = git_server
    stats = _sync(env, _settings(env, tmp_path, url), f"eng-git-{uuid.uuid4().hex[:8]}", ["eng"], url)
    assert stats.source_errors and stats.added == 0
    admin_auth = "Basic " + base64.b64encode(":".join(ADMIN).encode()).decode()
    assert admin_auth not in seen and seen  # asked, and never answered with the admin's credentials


def test_a_group_fetches_with_its_own_credentials(env, git_server, admin_home, tmp_path):
    url, seen = git_server
    stats = _sync(env, _settings(env, tmp_path, url), f"hr-git-{uuid.uuid4().hex[:8]}", ["hr"], url)
    assert not stats.source_errors, stats.source_errors
    assert stats.added >= 2
    hr_auth = "Basic " + base64.b64encode(":".join(HR).encode()).decode()
    admin_auth = "Basic " + base64.b64encode(":".join(ADMIN).encode()).decode()
    assert hr_auth in seen and admin_auth not in seen


RECORDING_SSH = f"""#!{sys.executable}
import json, os, sys
with open(os.environ["SSH_LOG"], "a") as log:
    log.write(json.dumps({{"argv": sys.argv[1:], "agent": os.environ.get("SSH_AUTH_SOCK")}}) + "\\n")
sys.exit(1)
"""


def test_a_groups_ssh_remotes_use_its_key_and_no_agent(env, tmp_path, monkeypatch):
    """ssh is a recorder (nothing outside this machine is dialled): it is told to use the group's key only,
    no agent and no ~/.ssh/config of the server's."""
    fake = tmp_path / "ssh"
    fake.write_text(RECORDING_SSH)
    fake.chmod(0o755)
    log = tmp_path / "ssh.jsonl"
    monkeypatch.setenv("SSH_LOG", str(log))
    monkeypatch.setenv("GIT_SSH_COMMAND", str(fake))
    monkeypatch.setenv("GIT_SSH_VARIANT", "ssh")
    monkeypatch.setenv("SSH_AUTH_SOCK", str(tmp_path / "agent.sock"))
    hr_key = tmp_path / "hr.key"
    hr_key.write_text("not a real key\n")
    settings = _settings(env, tmp_path)
    allowances = dict(settings.group_allowances)
    allowances["hr"] = GroupAllowance(ssh_key=hr_key)
    settings = settings.model_copy(update={"group_allowances": allowances, "allow_private_networks": False})
    _sync(env, settings, f"hr-ssh-{uuid.uuid4().hex[:8]}", ["hr"], "ssh://git@172.32.0.1/team/handbook.git")
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls, "ssh was never run"
    argv = calls[0]["argv"]
    assert f"IdentityFile={hr_key.resolve()}" in argv and "IdentitiesOnly=yes" in argv
    assert "IdentityAgent=none" in argv and argv[argv.index("-F") + 1] == "/dev/null"
    assert not calls[0]["agent"]
    assert "HostName=172.32.0.1" in argv or "git@172.32.0.1" in argv  # still the checked address
