from __future__ import annotations

import subprocess

import pytest

from kadapt.connectors import Unchanged
from kadapt.errors import InvalidInput, PermissionDenied
from kadapt_git import GitConnector
from tests.connectors.conformance import ConnectorConformance, SourceUnderTest, documents, load


def git(repo, *args):
    subprocess.run(
        ["git", "-C", str(repo), *args],
        check=True,
        capture_output=True,
        env={
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@example.com",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@example.com",
            "PATH": "/usr/bin:/bin",
            "HOME": str(repo),
        },
    )


def make_repo(root):
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "docs").mkdir()
    (root / "README.md").write_text("# Wiki\n\nThe engineering wiki.\n")
    (root / "docs" / "deploy.md").write_text("# Deploying\n\nDeploys happen on Tuesdays after review.\n")
    (root / "docs" / "oncall.txt").write_text("On-call rotates weekly; the pager is PagerDuty.\n")
    (root / "setup.py").write_text("print('ignored')\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "initial")
    return root


def commit(root, message):
    git(root, "add", "-A")
    git(root, "commit", "-qm", message)


class TestGitConformance(ConnectorConformance):
    @pytest.fixture
    def source(self, kadapt_env):
        root = make_repo(kadapt_env / "repo")

        def change():
            (root / "docs" / "deploy.md").write_text("# Deploying\n\nDeploys happen on Thursdays now.\n")
            commit(root, "change")
            return "docs/deploy.md"

        def remove():
            (root / "README.md").unlink()
            commit(root, "remove")
            return "README.md"

        def break_one():
            (root / "docs" / "oncall.txt").write_bytes(b"\xff\xfe not utf-8 \xff")
            commit(root, "break")
            return "docs/oncall.txt"

        def make_unavailable():  # the remote moved away; the mirror from the first load stays
            root.rename(root.with_name("moved"))

        return SourceUnderTest(
            GitConnector, {"url": str(root)}, kadapt_env / "work", change, remove, break_one, make_unavailable
        )


def test_resync_reads_only_changed_files(kadapt_env):
    root = make_repo(kadapt_env / "repo")
    source = SourceUnderTest(GitConnector, {"url": str(root), "ref": "main"}, kadapt_env / "work", None, None, None)
    first = documents(load(source))
    known = {locator: doc.metadata["version"] for locator, doc in first.items()}
    (root / "docs" / "oncall.txt").write_text("On-call rotates every two weeks.\n")
    commit(root, "edit")
    second = load(source, known)
    read = [item.metadata["locator"] for item in second if not isinstance(item, Unchanged)]
    assert read == ["docs/oncall.txt"]
    assert sum(isinstance(item, Unchanged) for item in second) == 2


def test_ref_and_subdir(kadapt_env):
    root = make_repo(kadapt_env / "repo")
    first_commit = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    (root / "docs" / "new.md").write_text("# New\n\nAdded later.\n")
    commit(root, "add new")
    old = SourceUnderTest(
        GitConnector, {"url": str(root), "ref": first_commit, "subdir": "docs"}, kadapt_env / "w1", None, None, None
    )
    assert set(documents(load(old))) == {"docs/deploy.md", "docs/oncall.txt"}


def test_unknown_ref_is_a_clear_error(kadapt_env):
    root = make_repo(kadapt_env / "repo")
    source = SourceUnderTest(
        GitConnector, {"url": str(root), "ref": "no-such-branch"}, kadapt_env / "w", None, None, None
    )
    with pytest.raises(InvalidInput, match="no-such-branch"):
        load(source)


def test_local_repository_outside_allowed_roots_is_refused(kadapt_env, tmp_path_factory):
    root = make_repo(tmp_path_factory.mktemp("elsewhere") / "repo")
    source = SourceUnderTest(GitConnector, {"url": str(root)}, kadapt_env / "w", None, None, None)
    with pytest.raises(PermissionDenied):
        load(source)
