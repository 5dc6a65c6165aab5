"""The ``sharepoint`` connector: the files of a SharePoint document library (or a folder of it), or of a
OneDrive, through Microsoft Graph.

The first sync reads the drive with a delta query (``/drives/{id}/root/delta``) and keeps the delta link it ends
with; every later sync asks that link for what changed since, so an unchanged library costs one request and only
new or changed files are downloaded. Graph reports items by id and, in delta responses, without their paths:
the connector keeps the drive's tree (each item's parent, name and version) in the source's state and works out
which files lie under the folder from it, so that a folder moved out of the configured one takes its files out
of the KB, and one moved in brings them. A delta link Graph no longer honours (410 Gone) starts a full read,
which still downloads only files whose version changed.

Credentials: an Azure AD (Entra ID) app registration with the ``Sites.Read.All`` (or ``Sites.Selected``)
application permission, as an OAuth client in the web credentials entry of the Graph host::

    {"graph.microsoft.com": {"oauth": {"token_url": "https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token",
      "client_id": "...", "client_secret": "...", "scope": "https://graph.microsoft.com/.default"}}}

An expired token is renewed once per request (Graph answers 401); a 429 or 503 is retried after its Retry-After.
A file's download redirects to a pre-authenticated URL, fetched without the Graph token.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import quote, urlparse

from langchain_core.documents import Document
from pydantic import Field, field_validator

from kadapt.contracts import (
    DEFAULT_INCLUDE,
    ApiConnector,
    ApiError,
    ConnectorConfig,
    ListingIncomplete,
    LoadFailure,
    PathFilter,
    Unchanged,
    api_get,
    api_json,
    base_url,
    check_public_host,
    check_size,
    files_under,
    hookimpl,
    parse_document,
)
from kadapt.errors import DocumentLoadError, InvalidInput

__all__ = ["SharePointConnector"]

USER_AGENT = "kadapt-sharepoint-connector/0.1"
GRAPH = "https://graph.microsoft.com/v1.0"
_HOST = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+")
_SEGMENT = re.compile(r"[^\x00-\x1f\x7f\"*:<>?\\|#%]+")  # a SharePoint path segment (its forbidden characters)
_MAX_API_BYTES = 32 << 20  # one page of a delta response
_MAX_DELTA_PAGES = 10_000
_MAX_ITEMS = 500_000  # items of the drive's tree kept in the source's state


def _path(value: str, what: str) -> str:
    parts = [part for part in value.strip("/").split("/") if part]
    for part in parts:
        if part in (".", "..") or not _SEGMENT.fullmatch(part):
            raise ValueError(
                f"the {what} holds a segment SharePoint does not allow ('..', control characters, :*?<>|#%)"
            )
    return "/".join(parts)


class SharePointConfig(ConnectorConfig):
    site: str = Field(
        description="The site: <tenant>.sharepoint.com/sites/<name> (or the host alone for the root site)."
    )
    library: str | None = Field(default=None, description="Document library name; the site's default library if empty.")
    folder: str = Field(
        default="", description="Only read files under this folder of the library (e.g. Policies/2026)."
    )
    include: list[str] = Field(
        default_factory=lambda: list(DEFAULT_INCLUDE), description="gitignore-style patterns of paths to read."
    )
    exclude: list[str] = Field(default_factory=list, description="gitignore-style patterns of paths to skip.")
    graph_url: str = Field(default=GRAPH, description="Microsoft Graph's base URL (another for national clouds).")
    timeout: float = Field(default=30.0, gt=0, le=120, description="Seconds to wait for each request (at most 120).")

    @field_validator("site")
    @classmethod
    def _site(cls, value: str) -> str:
        host, _, path = value.removeprefix("https://").strip("/").partition("/")
        if not _HOST.fullmatch(host.lower()):
            raise ValueError("the site is <tenant>.sharepoint.com/sites/<name>, without https:// or a query")
        return f"{host.lower()}/{_path(path, 'site path')}".rstrip("/")

    @field_validator("library")
    @classmethod
    def _library(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or not value.isprintable() or len(value) > 256):
            raise ValueError("a library name is up to 256 printable characters")
        return value

    @field_validator("folder")
    @classmethod
    def _folder(cls, value: str) -> str:
        return _path(value, "folder")

    @field_validator("graph_url")
    @classmethod
    def _graph(cls, value: str) -> str:
        return base_url(value, GRAPH)


class SharePointConnector(ApiConnector):
    kind = "sharepoint"
    user_agent = USER_AGENT
    Config = SharePointConfig
    description = "Files of a SharePoint library or folder (Microsoft Graph); re-syncs ask a delta link for changes."
    config: SharePointConfig

    @property
    def api_base(self) -> str:
        return self.config.graph_url

    def load(self) -> Iterator[Document | Unchanged | LoadFailure | ListingIncomplete]:
        self.check()
        timeout = self.config.timeout
        with (
            self.api_client(timeout=timeout) as self._graph,
            self.api_client(timeout=timeout, authenticated=False) as self._plain,
        ):
            try:
                drive = self._drive_id()
                tree, base = self._read_tree(drive)
            except ApiError as exc:
                raise InvalidInput(f"cannot list {self._where()}: {_explained(exc, self.config.graph_url)}") from None
            wanted = PathFilter(self.config.include, self.config.exclude, hidden=True)
            for item_id, relative in files_under(tree, base):
                if wanted(relative):
                    yield self._load(drive, item_id, relative, tree[item_id])

    # the drive and its tree

    def _drive_id(self) -> str:
        host, _, path = self.config.site.partition("/")
        site = api_json(self._graph, f"{self.config.graph_url}/sites/{host}:/{quote(path)}", limit=_MAX_API_BYTES)
        site_id = quote(str(site.get("id", "")), safe="")
        if not self.config.library:
            drive = api_json(self._graph, f"{self.config.graph_url}/sites/{site_id}/drive", limit=_MAX_API_BYTES)
            return quote(str(drive.get("id", "")), safe="")
        drives = api_json(self._graph, f"{self.config.graph_url}/sites/{site_id}/drives", limit=_MAX_API_BYTES)
        for drive in drives.get("value", []):
            if isinstance(drive, dict) and drive.get("name") == self.config.library:
                return quote(str(drive.get("id", "")), safe="")
        names = ", ".join(sorted(str(d.get("name")) for d in drives.get("value", []) if isinstance(d, dict)))
        raise ApiError(f"no library named {self.config.library!r} in the site (its libraries: {names or 'none'})")

    def _read_tree(self, drive: str) -> tuple[dict[str, dict], str]:
        """The drive's tree after this sync's delta, and the id of the folder to read; the state keeps both and
        the delta link for the next sync."""
        state = self.context.state
        start = f"{self.config.graph_url}/drives/{drive}/root/delta"
        known = state.get("drive") == drive and isinstance(state.get("tree"), dict) and state.get("delta")
        tree: dict[str, dict] = dict(state["tree"]) if known else {}
        try:
            link = self._apply_delta(tree, state["delta"] if known else start)
        except ApiError as exc:
            if exc.status_code != 410 or not known:  # 410: the delta link expired; read the drive afresh
                raise
            tree = {}
            link = self._apply_delta(tree, start)
        base = self._folder_id(drive, tree)
        state.update(drive=drive, delta=link, tree=tree)
        return tree, base

    def _apply_delta(self, tree: dict[str, dict], link: str) -> str:
        """Apply every page of the delta at ``link`` to ``tree``; returns the link for the next sync."""
        for _ in range(_MAX_DELTA_PAGES):
            page = api_json(self._graph, self._on_graph(link), limit=_MAX_API_BYTES)
            for entry in page.get("value", []):
                if isinstance(entry, dict) and entry.get("id"):
                    _apply(tree, entry)
            if len(tree) > _MAX_ITEMS:
                raise ApiError(f"the drive holds more than {_MAX_ITEMS:,} items; point the source at a smaller library")
            if page.get("@odata.nextLink"):
                link = str(page["@odata.nextLink"])
            elif page.get("@odata.deltaLink"):
                return self._on_graph(str(page["@odata.deltaLink"]))
            else:
                raise ApiError("a delta page ended with neither a next link nor a delta link")
        raise ApiError(f"the delta query went past {_MAX_DELTA_PAGES:,} pages")

    def _on_graph(self, link: str) -> str:
        """``link`` when it is on the configured Graph URL: Graph's own links are followed only there."""
        if not link.startswith(self.config.graph_url + "/"):
            raise ApiError(f"Graph sent a link off {self.config.graph_url}: {link[:80]!r}")
        return link

    def _folder_id(self, drive: str, tree: dict[str, dict]) -> str:
        root = next((item_id for item_id, item in tree.items() if item.get("root")), None)
        if root is None:
            raise ApiError("the delta query did not report the drive's root")
        if not self.config.folder:
            return root
        url = f"{self.config.graph_url}/drives/{drive}/root:/{quote(self.config.folder)}"
        folder = api_json(self._graph, url, limit=_MAX_API_BYTES)
        if "folder" not in folder:
            raise ApiError(f"{self.config.folder!r} is a file, not a folder", 400)
        return str(folder.get("id"))

    # files

    def _load(self, drive: str, item_id: str, relative: str, item: dict) -> Document | Unchanged | LoadFailure:
        version = str(item.get("v") or "") or None
        if version is not None and self.known_versions.get(relative) == version:
            return Unchanged(relative)
        limit = self.settings.max_document_bytes
        try:
            if isinstance(item.get("s"), int):
                check_size(item["s"], limit)
            data = self._download(
                f"{self.config.graph_url}/drives/{drive}/items/{quote(item_id, safe='')}/content", limit
            )
            parsed = parse_document(data, item.get("n") or relative, settings=self.settings)
        except DocumentLoadError as exc:
            return LoadFailure(relative, exc.message)
        metadata = {
            "locator": relative,
            "version": version,
            "title": parsed.title or item.get("n"),
            "url": item.get("u"),
        }
        return Document(page_content=parsed.text, metadata=metadata)

    def _download(self, url: str, limit: int) -> bytes:
        """A file's content: Graph answers 302 to a pre-authenticated URL, fetched without the Graph token (the
        address checked as every other)."""
        response = api_get(self._graph, url, limit=limit)
        if response.status_code in (301, 302, 303, 307, 308) and response.headers.get("location"):
            location = response.headers["location"]
            if urlparse(location).scheme not in ("https", "http"):
                raise ApiError(f"the download of {url} redirects to {location[:80]!r}, not an http(s) URL")
            allowances = self.allowances
            check_public_host(
                location, allow_private=allowances.private_networks, private_hosts=allowances.private_hosts
            )
            response = api_get(self._plain, location, limit=limit)
        if response.status_code != 200:
            raise ApiError(f"HTTP {response.status_code} from {url}", response.status_code)
        return response.content

    def _where(self) -> str:
        library = f"library {self.config.library!r}" if self.config.library else "the default library"
        return f"{library} of {self.config.site}" + (f", folder {self.config.folder!r}" if self.config.folder else "")


def _apply(tree: dict[str, dict], entry: dict) -> None:
    """One delta entry applied to the tree: a deleted item leaves it; any other is added or replaced."""
    item_id = str(entry["id"])
    if entry.get("deleted") is not None:
        tree.pop(item_id, None)
        return
    parent = entry.get("parentReference") if isinstance(entry.get("parentReference"), dict) else {}
    item = {"p": parent.get("id"), "n": str(entry.get("name") or "")}
    if entry.get("root") is not None:
        item["root"] = True
    if entry.get("folder") is not None or entry.get("root") is not None:
        item["d"] = True
    elif entry.get("file") is not None:
        item |= {"v": entry.get("cTag") or entry.get("eTag"), "s": entry.get("size"), "u": entry.get("webUrl")}
    else:
        return  # a OneNote package or another kind of item: not a file to read
    tree[item_id] = item


def _explained(exc: ApiError, graph_url: str) -> str:
    host = urlparse(graph_url).netloc
    hints = {
        401: f"Graph refused the app's token: check the OAuth client in the web credentials entry for {host}",
        403: "the app may not read this site: grant it Sites.Read.All, or Sites.Selected with this site",
        404: "no such site, library or folder, or the app may not see it",
    }
    hint = hints.get(exc.status_code or 0)
    return f"{exc.message} ({hint})" if hint else exc.message


@hookimpl
def register_connectors(register):
    register(SharePointConnector)
