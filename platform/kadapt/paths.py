"""Path confinement and glob matching shared by the connectors that read files; atomic file writes."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pathspec

from kadapt.errors import PermissionDenied

__all__ = [
    "files_under",
    "DEFAULT_INCLUDE",
    "PathFilter",
    "ensure_allowed",
    "fsync_path",
    "is_allowed",
    "publish_folder",
    "write_atomic",
]

# .csv and .eml are read only when a source includes them: a folder's data exports and saved mail are not
# documents by default
DEFAULT_INCLUDE = ["*.md", "*.markdown", "*.txt", "*.rst", "*.html", "*.htm", "*.pdf", "*.docx", "*.pptx", "*.xlsx"]


def is_allowed(path: Path, roots: Sequence[Path]) -> bool:
    """True when ``path``, with every symlink and ``..`` resolved, lies under one of ``roots``."""
    resolved = path.resolve()
    return any(resolved == root or resolved.is_relative_to(root) for root in roots)


def ensure_allowed(path: Path, roots: Sequence[Path]) -> Path:
    if not is_allowed(path, roots):
        listed = ", ".join(str(root) for root in roots)
        raise PermissionDenied(
            f"{path} is outside the allowed roots ({listed}); an admin can add it to KADAPT_ALLOWED_ROOTS"
        )
    return path.resolve()


class PathFilter:
    """gitignore-style include/exclude patterns over relative POSIX paths."""

    def __init__(self, include: Sequence[str], exclude: Sequence[str], *, hidden: bool = False) -> None:
        self._include = pathspec.PathSpec.from_lines("gitignore", include or ["*"])
        self._exclude = pathspec.PathSpec.from_lines("gitignore", exclude)
        self._hidden = hidden

    def __call__(self, relative_path: str) -> bool:
        if not self._hidden and any(part.startswith(".") for part in relative_path.split("/")):
            return False
        return self._include.match_file(relative_path) and not self._exclude.match_file(relative_path)


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Write ``text`` to ``path`` so that a reader, or a process killed part-way, sees the old file or the
    whole new one, never a part."""
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed before the rename below
        "w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
    )
    try:
        with handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(handle.name, mode)  # temporary files start private
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def fsync_path(path: Path) -> None:
    """Flush one file, or one folder's entries, to disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def publish_folder(staging: Path, final: Path, *, replace: bool = False) -> None:
    """Rename the finished folder ``staging`` to ``final`` so that after a crash ``final`` is absent, the old one
    or the whole new one: every file and folder under ``staging`` is fsynced before the rename (else the rename can
    reach the disk before the data it names), and the parent after it. ``final`` must not exist (or be an empty
    folder) unless ``replace``: then an existing ``final`` is moved aside first and removed after."""
    for folder, _, files in os.walk(staging, topdown=False):  # deepest first: a folder after its entries
        for name in files:
            fsync_path(Path(folder) / name)
        fsync_path(Path(folder))
    previous = final.with_name(f".old-{final.name}-{os.getpid()}-{id(staging):x}")
    moved = False
    if replace and final.exists():
        os.replace(final, previous)
        moved = True
    try:
        os.replace(staging, final)
        fsync_path(final.parent)
    except BaseException:
        if moved and not final.exists():
            os.replace(previous, final)  # the old folder stays where it was
        raise
    if moved:
        shutil.rmtree(previous, ignore_errors=True)


def files_under(tree: dict[str, dict], base: str) -> Iterator[tuple[str, str]]:
    """(id, path under ``base``) of every file below the folder ``base``, in path order, in a drive's ``tree``:
    item id -> ``{"p": parent id, "n": name, "d": True for a folder, "root": True for the drive's root}``, as
    drive APIs that name items by id (Microsoft Graph's delta, Google Drive's changes) let a connector keep it.
    An item whose parents never reach ``base`` (elsewhere in the drive, or in a cycle) is not under it."""
    paths: dict[str, str | None] = {base: ""}

    def path_of(item_id: str, depth: int = 0) -> str | None:
        if item_id in paths:
            return paths[item_id]
        item = tree.get(item_id)
        if item is None or item.get("root") or depth > 256:  # outside the folder, or a cycle
            paths[item_id] = None
            return None
        parent = path_of(str(item.get("p")), depth + 1) if item.get("p") else None
        paths[item_id] = None if parent is None else f"{parent}/{item['n']}".lstrip("/")
        return paths[item_id]

    found = [(item_id, path_of(item_id)) for item_id, item in tree.items() if not item.get("d")]
    yield from sorted(((item_id, path) for item_id, path in found if path), key=lambda pair: pair[1])
