"""The ``git`` connector: a repository (URL or local path) at a branch, tag or commit.

The repository is mirrored into the source's work folder; a re-sync fetches, then reads only the files
whose blob id changed (unchanged blobs are reported without being read).
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

from langchain_core.documents import Document
from pydantic import Field, field_validator

from kadapt.contracts import (
    DEFAULT_INCLUDE,
    Connector,
    ConnectorConfig,
    LoadFailure,
    PathFilter,
    Unchanged,
    check_public_host,
    hookimpl,
    parse_document,
    pin_git_remote,
)
from kadapt.errors import DocumentLoadError, InvalidInput, PermissionDenied

__all__ = ["GitConnector"]

_SYMLINK_MODE = 0o120000
_REMOTE_SCHEMES = {"https", "http", "ssh", "git"}


def _group_credentials_env(allowances, work_dir: Path, env: dict[str, str]) -> dict[str, str]:
    """``env`` for a fetch on behalf of a KB that groups own: git and ssh see only those groups' credentials.

    The server's own (its ssh keys, agent and ~/.ssh/config; ~/.gitconfig credential helpers,
    ~/.git-credentials and ~/.netrc; the system git config) belong to the admin: an editor's source must not
    fetch with them. Known host keys are not secrets, so the server's known_hosts still verifies hosts."""
    env = dict(env)
    known_hosts = os.path.expanduser("~/.ssh/known_hosts")
    home = work_dir / "home"  # empty: no .gitconfig, .git-credentials, .netrc or .ssh of the server's
    home.mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home), GIT_CONFIG_NOSYSTEM="1", SSH_AUTH_SOCK="")
    env.update(GIT_ASKPASS="", SSH_ASKPASS="")
    base = env.get("GIT_SSH_COMMAND") or os.environ.get("GIT_SSH_COMMAND")
    base = base or shlex.quote(os.environ.get("GIT_SSH") or "ssh")
    options = ["-F", "/dev/null", "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", "BatchMode=yes"]
    options += ["-o", f"UserKnownHostsFile={known_hosts}"]
    keys = allowances.ssh_keys or ("none",)  # none: not even ssh's default key files
    options += [item for key in keys for item in ("-o", f"IdentityFile={key}")]
    env["GIT_SSH_COMMAND"] = " ".join([base, *(shlex.quote(option) for option in options)])
    # an empty helper first clears any helper configured elsewhere; then the groups' own store files
    helpers = ["", *(f"store --file={shlex.quote(str(path))}" for path in allowances.credential_files)]
    count = int(env.get("GIT_CONFIG_COUNT", "0"))
    for offset, helper in enumerate(helpers):
        env[f"GIT_CONFIG_KEY_{count + offset}"] = "credential.helper"
        env[f"GIT_CONFIG_VALUE_{count + offset}"] = helper
    env["GIT_CONFIG_COUNT"] = str(count + len(helpers))
    return env


def _no_option(value: str, what: str) -> str:
    """Refuse a value git could read as an option (``--upload-pack=...``) or that hides control characters."""
    if value.lstrip().startswith("-"):
        raise ValueError(f"a git {what} may not start with '-'")
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise ValueError(f"a git {what} may not contain control characters")
    return value


class GitConfig(ConnectorConfig):
    url: str = Field(description="Repository URL (https://, ssh, git@) or a local path under the allowed roots.")
    ref: str = Field(default="HEAD", description="Branch, tag or commit to read; HEAD is the default branch.")
    subdir: str = Field(default="", description="Only read files under this folder of the repository.")
    include: list[str] = Field(
        default_factory=lambda: list(DEFAULT_INCLUDE), description="gitignore-style patterns to read."
    )
    exclude: list[str] = Field(default_factory=list, description="gitignore-style patterns to skip.")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        value = _no_option(value, "URL")
        if not value.strip():
            raise ValueError("a git URL may not be empty")
        if "::" in value.split("/")[0]:
            raise ValueError("git remote helpers (ext::, fd::, ...) are not allowed; use https://, ssh:// or git://")
        try:  # a malformed host or port ('https://[x/repo') is the user's error, not the server's
            parsed = urlparse(value)
            parsed.hostname, parsed.port  # noqa: B018 - both parse lazily and raise ValueError
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a valid git URL: {exc}") from None
        return value

    @field_validator("ref")
    @classmethod
    def _ref(cls, value: str) -> str:
        value = _no_option(value, "ref")
        if not value or any(char.isspace() for char in value):
            raise ValueError(f"{value!r} is not a branch, tag or commit name")
        return value

    @field_validator("subdir")
    @classmethod
    def _subdir(cls, value: str) -> str:
        value = _no_option(value, "subdir")
        if ".." in value.split("/"):
            raise ValueError("a git subdir may not contain '..'")
        return value


class GitConnector(Connector):
    kind = "git"
    Config = GitConfig
    description = "A git repository at a branch, tag or commit; re-syncs read only changed files."
    config: GitConfig

    def _local_path(self) -> Path | None:
        url = self.config.url
        parsed = urlparse(url)
        if parsed.scheme == "file":
            return Path(parsed.path)
        if parsed.scheme or (":" in url and "@" in url.split(":")[0]):
            return None
        return Path(url).expanduser()

    def _remote_url(self) -> str:
        """The remote as a URL with a host (``user@host:path`` becomes ``ssh://user@host/path``)."""
        url = self.config.url
        try:
            scheme = urlparse(url).scheme
            if scheme:
                if scheme not in _REMOTE_SCHEMES:
                    raise InvalidInput(
                        f"git URL scheme {scheme!r} is not supported; use https://, ssh://, git://, user@host:path "
                        "or a local path under the allowed roots"
                    )
                self._check_protocol(scheme)
                urlparse(url).port  # noqa: B018 - raises ValueError on a bad port or IPv6 literal
                return url
            self._check_protocol("ssh")
            # user@host:path, the host possibly a bracketed IPv6 address (whose colons are not the separator)
            match = re.fullmatch(r"([^@/]+@)?(\[[0-9A-Fa-f:.]+\]|[^:/\[\]]+):(.*)", url, re.DOTALL)
            if match is None:
                raise ValueError(url)
            user, host, path = match.groups()
            remote = f"ssh://{user or ''}{host}/{path.lstrip('/')}"
            urlparse(remote).port  # noqa: B018
            return remote
        except ValueError:
            raise InvalidInput(
                f"{url!r} is not a git remote this connector can read; use https://host/path, ssh://user@host/path, "
                "git://host/path, user@host:path or a local path"
            ) from None

    def _check_protocol(self, protocol: str) -> None:
        allowed = self.settings.git_protocols
        if protocol not in allowed:
            raise InvalidInput(
                f"git over {protocol} is turned off here (KADAPT_GIT_PROTOCOLS={','.join(allowed)}): "
                f"{self.config.url!r}"
            )

    def _allowed_protocols(self) -> str:
        """GIT_ALLOW_PROTOCOL: the transports git may use, whatever a URL, a submodule or a redirect names;
        never ext:: (runs a command) or fd::, which the setting cannot name."""
        return ":".join(self.settings.git_protocols)

    def _check_remote_parts(self, url: str) -> None:
        parsed = urlparse(url)
        for part, what in ((parsed.username or "", "user name"), (parsed.hostname or "", "host")):
            if part.startswith("-"):
                raise InvalidInput(f"a git remote's {what} may not start with '-': {self.config.url!r}")

    def check(self) -> None:
        allowances = self.allowances
        local = self._local_path()
        if local is not None:
            self._check_protocol("file")
            allowances.check_path(local)
            if not local.exists():
                raise InvalidInput(f"no repository at {local}")
            # git tries <path>.git and <path>.git/.git when <path> is no repository: only <path> itself is checked
            if not _is_repository(local):
                raise InvalidInput(f"no git repository at {local} (neither {local / '.git'} nor a bare repository)")
            # a .git file, commondir, alternates or a symlinked object folder can make git read another
            # repository (another KB's mirror in the data directory): each must be readable too
            for path in _repository_paths(local):
                problem = allowances.refusal(path)
                if problem:
                    raise PermissionDenied(f"the repository at {local} reads objects from elsewhere: {problem}")
        else:  # a remote: like the web connector, never a loopback or private address unless allowed
            self._check_remote_parts(self._remote_url())
            check_public_host(
                self._remote_url(),
                allow_private=allowances.private_networks,
                private_hosts=allowances.private_hosts,
            )

    def _mirror(self):
        import git

        self.check()
        local = self._local_path()
        url = str(local.resolve()) if local is not None else self.config.url
        pin: dict[str, str] = {}
        if local is None:  # a remote is fetched from the addresses just checked, never through a redirect
            allowances = self.allowances
            pinned_url, pin = pin_git_remote(
                self._remote_url(),
                allow_private=allowances.private_networks,
                private_hosts=allowances.private_hosts,
            )
            if urlparse(pinned_url).scheme == "git":  # git:// names the checked address itself
                url = pinned_url
        env = {**pin, "GIT_ALLOW_PROTOCOL": self._allowed_protocols(), "GIT_TERMINAL_PROMPT": "0"}
        if self.allowances.groups:
            env = _group_credentials_env(self.allowances, self.context.work_dir, env)
        mirror_dir = self.context.work_dir / "mirror.git"
        try:
            if (mirror_dir / "HEAD").exists():
                repo = git.Repo(mirror_dir)
                # the URL goes into the mirror's config (no command line), the fetch names the remote only
                with repo.config_writer() as config:
                    config.set_value('remote "origin"', "url", url)
                with repo.git.custom_environment(**env):
                    repo.git.fetch(
                        "--prune",
                        "--no-recurse-submodules",
                        "--",
                        "origin",
                        "+refs/heads/*:refs/heads/*",
                        "+refs/tags/*:refs/tags/*",
                    )
            else:
                mirror_dir.parent.mkdir(parents=True, exist_ok=True)
                # GitPython ends the options with "--" before the URL and refuses ext:: and unsafe options
                repo = git.Repo.clone_from(url, mirror_dir, mirror=True, env=env)
            return repo, repo.commit(self.config.ref)
        except (git.GitCommandError, git.BadName, ValueError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            raise InvalidInput(
                f"cannot read {self.config.url!r} at ref {self.config.ref!r}: {detail.strip()}"
            ) from None

    def load(self) -> Iterator[Document | Unchanged | LoadFailure]:
        repo, commit = self._mirror()
        self.context.state["commit"] = commit.hexsha
        wanted = PathFilter(self.config.include, self.config.exclude)
        prefix = self.config.subdir.strip("/")
        try:
            tree = commit.tree / prefix if prefix else commit.tree
        except KeyError:  # not listed as empty: the source fails and keeps its documents
            raise InvalidInput(
                f"no folder {prefix!r} in {self.config.url!r} at ref {self.config.ref!r}; fix the source's subdir"
            ) from None
        if tree.type != "tree":
            raise InvalidInput(f"{prefix!r} in {self.config.url!r} is a file, not a folder; fix the source's subdir")
        limit = self.settings.max_document_bytes
        for item in tree.traverse():
            if item.type != "blob" or item.mode == _SYMLINK_MODE:
                continue
            relative = item.path[len(prefix) + 1 :] if prefix else item.path
            if not wanted(relative):
                continue
            if self.known_versions.get(item.path) == item.hexsha:
                yield Unchanged(item.path)
                continue
            if item.size > limit:
                yield LoadFailure(
                    item.path, f"file is {item.size:,} bytes, over the limit of {limit:,} (KADAPT_MAX_DOCUMENT_BYTES)"
                )
                continue
            try:
                parsed = parse_document(item.data_stream.read(), item.path, settings=self.settings)
            except DocumentLoadError as exc:
                yield LoadFailure(item.path, exc.message)
                continue
            yield Document(
                page_content=parsed.text,
                metadata={
                    "locator": item.path,
                    "version": item.hexsha,
                    "title": parsed.title,
                    "commit": commit.hexsha,
                },
            )


def _is_repository(local: Path) -> bool:
    """Whether git finds a repository at ``local`` itself (a work tree's ``.git``, or a bare repository)."""
    return (local / ".git").exists() or ((local / "HEAD").is_file() and (local / "objects").is_dir())


def _repository_paths(local: Path, depth: int = 0) -> Iterator[Path]:
    """The folders git reads a local repository's objects from besides ``local`` itself: its git dir (a
    ``.git`` file may name one anywhere), its common dir, its object folder, every symlink inside that, and the
    repositories its ``objects/info/alternates`` lists."""
    git_dir = local
    dot_git = local / ".git"
    if dot_git.is_file():
        text = dot_git.read_text(errors="replace").strip()
        git_dir = local / text.removeprefix("gitdir:").strip() if text.startswith("gitdir:") else dot_git
    elif dot_git.is_dir():
        git_dir = dot_git
    folders = [git_dir]
    common = git_dir / "commondir"
    if common.is_file():
        folders.append(git_dir / common.read_text(errors="replace").strip())
    for folder in folders:
        yield folder
        yield from _object_paths(folder / "objects", depth)


def _object_paths(objects: Path, depth: int) -> Iterator[Path]:
    yield objects
    if not objects.is_dir() or objects.is_symlink():
        return
    for directory, dirnames, filenames in os.walk(objects):
        for name in dirnames + filenames:
            if os.path.islink(os.path.join(directory, name)):
                yield Path(directory, name)
    alternates = objects / "info" / "alternates"
    if alternates.is_file() and depth < 5:
        for line in alternates.read_text(errors="replace").splitlines():
            if line.strip() and not line.startswith("#"):
                yield from _object_paths(objects / line.strip(), depth + 1)


@hookimpl
def register_connectors(register):
    register(GitConnector)
