from __future__ import annotations

import os

import pytest

from kadapt.connectors import LoadFailure, Unchanged
from kadapt.errors import PermissionDenied
from kadapt_files import FilesConnector
from tests.connectors.conformance import ConnectorConformance, SourceUnderTest, documents, load


def write_docs(root):
    (root / "sub").mkdir(parents=True)
    (root / "a.md").write_text("# Alpha\n\nThe alpha team ships robots on Mondays.\n")
    (root / "b.txt").write_text("Bravo handles invoices every Friday.\n")
    (root / "sub" / "c.html").write_text(
        "<html><head><title>Charlie</title><script>var x=1;</script></head>"
        "<body><h1>Charlie</h1><p>Charlie runs the lab.</p></body></html>"
    )
    (root / "notes.py").write_text("print('not included by default')\n")


class TestFilesConformance(ConnectorConformance):
    @pytest.fixture
    def source(self, kadapt_env):
        root = kadapt_env / "docs"
        write_docs(root)

        def change():
            path = root / "b.txt"
            path.write_text("Bravo handles invoices every Thursday now.\n")
            os.utime(path, ns=(1, 2))  # a different mtime even on coarse clocks
            return "b.txt"

        def remove():
            (root / "a.md").unlink()
            return "a.md"

        def break_one():
            (root / "sub" / "c.html").write_bytes(b"\x00\x01binary")
            return "sub/c.html"

        def make_unavailable():  # as a share that is unmounted: the folder is gone
            root.rename(root.with_name("unmounted"))

        return SourceUnderTest(
            FilesConnector, {"path": str(root)}, kadapt_env / "work", change, remove, break_one, make_unavailable
        )


def test_unchanged_files_are_not_read(kadapt_env):
    root = kadapt_env / "docs"
    write_docs(root)
    source = SourceUnderTest(FilesConnector, {"path": str(root)}, kadapt_env / "w", None, None, None)
    first = documents(load(source))
    second = load(source, {locator: doc.metadata["version"] for locator, doc in first.items()})
    assert all(isinstance(item, Unchanged) for item in second) and len(second) == 3


def test_include_and_exclude_globs(kadapt_env):
    root = kadapt_env / "docs"
    write_docs(root)
    source = SourceUnderTest(
        FilesConnector,
        {"path": str(root), "include": ["*.md", "*.html"], "exclude": ["sub/"]},
        kadapt_env / "w",
        None,
        None,
        None,
    )
    assert set(documents(load(source))) == {"a.md"}


def test_path_outside_allowed_roots_is_refused(kadapt_env, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    source = SourceUnderTest(FilesConnector, {"path": str(outside)}, kadapt_env / "w", None, None, None)
    with pytest.raises(PermissionDenied, match="outside the allowed roots"):
        load(source)
    dotdot = SourceUnderTest(
        FilesConnector, {"path": str(kadapt_env / ".." / outside.name)}, kadapt_env / "w", None, None, None
    )
    with pytest.raises(PermissionDenied):
        load(dotdot)


def test_symlink_escaping_the_root_is_a_document_error(kadapt_env, tmp_path_factory):
    root = kadapt_env / "docs"
    write_docs(root)
    outside = tmp_path_factory.mktemp("secret")
    (outside / "passwords.md").write_text("root: hunter2\n")
    (root / "leak.md").symlink_to(outside / "passwords.md")
    (root / "leakdir").symlink_to(outside, target_is_directory=True)
    items = load(SourceUnderTest(FilesConnector, {"path": str(root)}, kadapt_env / "w", None, None, None))
    failures = {item.locator: item.message for item in items if isinstance(item, LoadFailure)}
    assert set(failures) == {"leak.md", "leakdir"}
    assert all("outside the allowed roots" in message for message in failures.values())
    assert not any("hunter2" in doc.page_content for doc in documents(items).values())
