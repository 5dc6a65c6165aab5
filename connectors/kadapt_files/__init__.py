"""The ``files`` connector: a directory tree, confined to the roots its KB's owner groups are allowed (never
kadapt's data directory, even under such a root)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from langchain_core.documents import Document
from pydantic import Field

from kadapt.contracts import (
    DEFAULT_INCLUDE,
    Connector,
    ConnectorConfig,
    ListingIncomplete,
    LoadFailure,
    PathFilter,
    Unchanged,
    hookimpl,
    parse_document,
)
from kadapt.errors import DocumentLoadError, InvalidInput

__all__ = ["FilesConnector"]


class FilesConfig(ConnectorConfig):
    path: Path = Field(description="Folder to read; must lie under a root its KB's groups are allowed.")
    include: list[str] = Field(
        default_factory=lambda: list(DEFAULT_INCLUDE), description="gitignore-style patterns to read."
    )
    exclude: list[str] = Field(default_factory=list, description="gitignore-style patterns to skip.")
    hidden: bool = Field(default=False, description="Also read files and folders whose name starts with '.'.")


class FilesConnector(Connector):
    kind = "files"
    Config = FilesConfig
    description = "A folder of .md, .txt, .html, .pdf, .docx, .pptx and .xlsx files (.csv and .eml when included)."
    config: FilesConfig

    def check(self) -> None:
        root = self.config.path.expanduser()
        self.allowances.check_path(root)
        if not root.is_dir():
            raise InvalidInput(f"{root} is not a folder; give the folder to read with --path")

    def load(self) -> Iterator[Document | Unchanged | LoadFailure | ListingIncomplete]:
        """The files under the folder. A folder that cannot be listed (unreadable, or gone while the walk
        runs) makes the listing incomplete, so the sync deletes nothing; a folder that is present, readable
        and empty is a complete listing of nothing."""
        self.check()
        root = self.config.path.expanduser().resolve()
        allowances = self.allowances
        wanted = PathFilter(self.config.include, self.config.exclude, hidden=self.config.hidden)
        limit = self.settings.max_document_bytes
        unlisted: list[OSError] = []
        for directory, dirnames, filenames in os.walk(root, onerror=unlisted.append):
            yield from _unlisted(unlisted, root)
            dirnames.sort()
            for dirname in list(dirnames):
                full = Path(directory, dirname)
                problem = allowances.refusal(full)
                if problem:  # a symlink out of the roots, or kadapt's data directory under the root: not entered
                    dirnames.remove(dirname)
                    yield LoadFailure(full.relative_to(root).as_posix(), problem)
            for filename in sorted(filenames):
                full = Path(directory, filename)
                relative = full.relative_to(root).as_posix()
                if not wanted(relative):
                    continue
                yield self._load_file(full, relative, limit)
        yield from _unlisted(unlisted, root)

    def _load_file(self, full: Path, relative: str, limit: int) -> Document | Unchanged | LoadFailure:
        problem = self.allowances.refusal(full)
        if problem:
            return LoadFailure(relative, problem)
        try:
            stat = full.stat()
        except OSError as exc:
            return LoadFailure(relative, f"cannot read: {exc.strerror or exc}")
        if stat.st_size > limit:
            return LoadFailure(
                relative, f"file is {stat.st_size:,} bytes, over the limit of {limit:,} (KADAPT_MAX_DOCUMENT_BYTES)"
            )
        version = f"{stat.st_mtime_ns}-{stat.st_size}"
        if self.known_versions.get(relative) == version:
            return Unchanged(relative)
        try:
            with full.open("rb") as file:
                # judged again on what was opened: a folder or file swapped for a symlink since the check above
                # (out of the roots, into the data directory) is refused, not read
                problem = self.allowances.refusal(_opened_path(file, full))
                if problem:
                    return LoadFailure(relative, problem)
                data = file.read(limit + 1)  # at most one byte past the limit, should the file have grown
            parsed = parse_document(data, relative, settings=self.settings)
        except DocumentLoadError as exc:
            return LoadFailure(relative, exc.message)
        except OSError as exc:
            return LoadFailure(relative, f"cannot read: {exc.strerror or exc}")
        return Document(
            page_content=parsed.text,
            metadata={"locator": relative, "version": version, "title": parsed.title, "path": str(full)},
        )


def _opened_path(file, path: Path) -> Path:
    """The path of the file ``file`` really is (Linux names it under /proc/self/fd), else ``path``."""
    link = Path(f"/proc/self/fd/{file.fileno()}")
    try:
        return Path(os.readlink(link))
    except OSError:
        return path


def _unlisted(errors: list[OSError], root: Path) -> Iterator[ListingIncomplete]:
    """The folders ``os.walk`` could not list, as reasons (and empties the list)."""
    for error in errors:
        where = Path(error.filename or root)
        relative = where.relative_to(root).as_posix() if where.is_relative_to(root) else str(where)
        shown = "the folder itself" if relative == "." else f"folder {relative!r}"
        yield ListingIncomplete(
            f"cannot list {shown} of {root}: {error.strerror or error}; make it readable by kadapt (or mount it)"
        )
    errors.clear()


@hookimpl
def register_connectors(register):
    register(FilesConnector)
