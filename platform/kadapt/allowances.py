"""What a source may reach: folders and private hosts, confined per owner group.

A KB that no group owns is an admin's: its sources get the global allowances (``KADAPT_ALLOWED_ROOTS``,
``KADAPT_ALLOW_PRIVATE_NETWORKS``). A KB owned by groups gets only the union of those groups' entries in
``KADAPT_GROUP_ALLOWANCES``, never the global ones, so an editor cannot point a KB at a folder or an intranet
host that was allowed for an admin or for another group. kadapt's data directory (catalog, vectors, models,
every source's mirror) is never readable, whatever a root contains.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kadapt.errors import PermissionDenied

if TYPE_CHECKING:
    from kadapt.settings import Settings

__all__ = ["Allowances", "source_allowances"]


@dataclass(frozen=True)
class Allowances:
    roots: tuple[Path, ...]
    private_hosts: frozenset[str]  # names a source may reach on a private-range address
    private_networks: bool
    protected: tuple[Path, ...]  # never read, even under a root
    groups: tuple[str, ...] = ()  # the owner groups these come from; empty = the global ones
    ssh_keys: tuple[Path, ...] = ()  # the groups' own git credentials (an admin's KB uses the server's)
    credential_files: tuple[Path, ...] = ()
    web_credentials: tuple[Path, ...] = ()  # JSON files of per-host credentials its web sources send
    s3_credentials: tuple[Path, ...] = ()  # JSON files of the access keys its s3 sources use

    @property
    def _setting(self) -> str:
        if not self.groups:
            return "KADAPT_ALLOWED_ROOTS"
        return f"the roots of group {', '.join(self.groups)} in KADAPT_GROUP_ALLOWANCES"

    def refusal(self, path: Path) -> str | None:
        """Why ``path`` (with every symlink and ``..`` resolved) may not be read, or None when it may."""
        resolved = path.expanduser().resolve()
        for protected in self.protected:
            if resolved == protected or resolved.is_relative_to(protected):
                return f"{path} is inside kadapt's data directory ({protected}), which no source may read"
        if not any(resolved == root or resolved.is_relative_to(root) for root in self.roots):
            listed = ", ".join(str(root) for root in self.roots) or "none"
            owner = f"KB owned by {', '.join(self.groups)}" if self.groups else "KB that no group owns"
            return (
                f"{path} is outside the allowed roots of a {owner} ({listed}); an admin can add it to {self._setting}"
            )
        return None

    def readable(self, path: Path) -> bool:
        return self.refusal(path) is None

    def check_path(self, path: Path) -> Path:
        """``path`` resolved, or PermissionDenied naming why it may not be read and the setting to change."""
        problem = self.refusal(path)
        if problem:
            raise PermissionDenied(problem)
        return path.expanduser().resolve()


def source_allowances(settings: Settings, owner_groups: Iterable[str] = ()) -> Allowances:
    """The allowances of a source whose KB is owned by ``owner_groups`` (none: an admin's KB)."""
    groups = tuple(sorted(set(owner_groups)))
    protected = tuple(dict.fromkeys(path.expanduser().resolve() for path in settings.protected_dirs))
    if not groups:
        return Allowances(
            roots=tuple(settings.effective_allowed_roots),
            private_hosts=frozenset(),
            private_networks=settings.allow_private_networks,
            protected=protected,
            web_credentials=(settings.web_credentials,) if settings.web_credentials else (),
            s3_credentials=(settings.s3_credentials,) if settings.s3_credentials else (),
        )
    entries = [settings.group_allowances[group] for group in groups if group in settings.group_allowances]
    return Allowances(
        roots=tuple(dict.fromkeys(root for entry in entries for root in entry.roots)),
        private_hosts=frozenset(host for entry in entries for host in entry.hosts),
        private_networks=any(entry.private_networks for entry in entries),
        protected=protected,
        groups=groups,
        ssh_keys=tuple(dict.fromkeys(entry.ssh_key for entry in entries if entry.ssh_key)),
        credential_files=tuple(dict.fromkeys(entry.git_credentials for entry in entries if entry.git_credentials)),
        web_credentials=tuple(dict.fromkeys(entry.web_credentials for entry in entries if entry.web_credentials)),
        s3_credentials=tuple(dict.fromkeys(entry.s3_credentials for entry in entries if entry.s3_credentials)),
    )
