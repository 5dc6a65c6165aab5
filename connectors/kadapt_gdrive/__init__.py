"""The ``gdrive`` connector: the files under a Google Drive folder (in My Drive or a shared drive), through the
Drive API v3. Google Docs, Sheets and Slides are exported as text (Docs and Slides as plain text, a Sheet's first
sheet as CSV); other files are downloaded and parsed as the ``files`` connector's are.

The first sync takes a changes page token, then lists the folder's tree; each later sync asks the changes API
what changed since its token, so an unchanged folder costs one request and only new or changed files are
downloaded. The tree (each item's parent, name and version) is kept in the source's state to place files: a
folder moved in is listed then, one moved out takes its files out of the KB, a trashed or deleted file leaves.

Credentials: a service account's JSON key (Google Cloud console → IAM → Service accounts → Keys), as the
``google_service_account`` of the API host's entry in the web credentials file; share the folder (or the shared
drive) with the service account's e-mail. google-auth signs and trades the key for access tokens.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import quote, urlencode

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
    api_bytes,
    api_json,
    base_url,
    check_size,
    files_under,
    hookimpl,
    parse_document,
)
from kadapt.errors import DocumentLoadError, InvalidInput

__all__ = ["GoogleDriveConnector"]

USER_AGENT = "kadapt-gdrive-connector/0.1"
API = "https://www.googleapis.com"
_ID = re.compile(r"[A-Za-z0-9_-]{1,200}")
_FOLDER = "application/vnd.google-apps.folder"
# Google's own formats, exported as text: (export MIME type, the suffix kadapt parses it by)
_EXPORTS = {
    "application/vnd.google-apps.document": ("text/plain", ".txt"),
    "application/vnd.google-apps.presentation": ("text/plain", ".txt"),
    "application/vnd.google-apps.spreadsheet": ("text/csv", ".csv"),
}
_FIELDS = "id,name,mimeType,parents,version,size,trashed,webViewLink"
_MAX_API_BYTES = 32 << 20
_MAX_PAGES = 10_000
_MAX_ITEMS = 200_000  # items of the folder's tree kept in the source's state


class GoogleDriveConfig(ConnectorConfig):
    folder: str = Field(description="The folder's id: the last part of its URL (drive.google.com/drive/folders/<id>).")
    shared_drive: str | None = Field(default=None, description="The shared drive's id, when the folder is in one.")
    include: list[str] = Field(
        default_factory=lambda: list(DEFAULT_INCLUDE),
        description="gitignore-style patterns of paths to read (Google Docs, Sheets and Slides are always read).",
    )
    exclude: list[str] = Field(default_factory=list, description="gitignore-style patterns of paths to skip.")
    api_url: str = Field(default=API, description="The Drive API's base URL.")
    timeout: float = Field(default=30.0, gt=0, le=120, description="Seconds to wait for each request (at most 120).")

    @field_validator("folder", "shared_drive")
    @classmethod
    def _id(cls, value: str | None) -> str | None:
        if value is not None and not _ID.fullmatch(value):
            raise ValueError("a Drive id is letters, digits, '_' and '-' (the last part of the folder's URL)")
        return value

    @field_validator("api_url")
    @classmethod
    def _api(cls, value: str) -> str:
        return base_url(value, API)


class GoogleDriveConnector(ApiConnector):
    kind = "gdrive"
    user_agent = USER_AGENT
    Config = GoogleDriveConfig
    description = "Files under a Google Drive folder, Docs/Sheets/Slides as text; re-syncs ask the changes API."
    config: GoogleDriveConfig

    @property
    def api_base(self) -> str:
        return self.config.api_url

    def load(self) -> Iterator[Document | Unchanged | LoadFailure | ListingIncomplete]:
        self.check()
        with self.api_client(timeout=self.config.timeout) as self._client:
            try:
                tree = self._read_tree()
            except ApiError as exc:
                raise InvalidInput(f"cannot list folder {self.config.folder}: {_explained(exc)}") from None
            wanted = PathFilter(self.config.include, self.config.exclude, hidden=True)
            seen: set[str] = set()
            for item_id, relative in files_under(tree, self.config.folder):
                item = tree[item_id]
                if item.get("m") in _EXPORTS or wanted(relative):
                    # Drive allows two files of one name in a folder: the second is told apart by its id
                    locator = relative if relative not in seen else f"{relative} ({item_id})"
                    seen.add(locator)
                    yield self._load(item_id, locator, item)

    # the tree

    def _read_tree(self) -> dict[str, dict]:
        state = self.context.state
        known = state.get("folder") == self.config.folder and isinstance(state.get("tree"), dict) and state.get("token")
        if known:
            tree = dict(state["tree"])
            token = self._apply_changes(tree, str(state["token"]))
        else:
            token = str(self._json("/drive/v3/changes/startPageToken", {}).get("startPageToken") or "")
            tree = {}
            self._list_folder(tree, self.config.folder)
        state.update(folder=self.config.folder, token=token, tree=tree)
        return tree

    def _list_folder(self, tree: dict[str, dict], folder: str) -> None:
        """Every item under ``folder`` into ``tree``, folder by folder."""
        waiting = [folder]
        while waiting:
            parent = waiting.pop()
            query = {"q": f"'{parent}' in parents and trashed=false", "fields": f"nextPageToken,files({_FIELDS})"}
            for entry in self._paged("/drive/v3/files", query | {"pageSize": 1000}, "files"):
                if _put(tree, entry, parent) and entry.get("mimeType") == _FOLDER and _ID.fullmatch(str(entry["id"])):
                    waiting.append(str(entry["id"]))  # an id the API sent goes into the next query only when valid
                if len(tree) > _MAX_ITEMS:
                    raise ApiError(
                        f"the folder holds more than {_MAX_ITEMS:,} items; point the source at a smaller one"
                    )

    def _apply_changes(self, tree: dict[str, dict], token: str) -> str:
        """The changes since ``token`` applied to ``tree``; returns the token for the next sync."""
        params = {"pageToken": token, "pageSize": 1000, "includeRemoved": "true"}
        params["fields"] = f"nextPageToken,newStartPageToken,changes(fileId,removed,file({_FIELDS}))"
        new_folders = []
        for _ in range(_MAX_PAGES):
            page = self._json("/drive/v3/changes", params)
            for change in page.get("changes", []):
                if isinstance(change, dict):
                    new_folders += self._apply(tree, change)
            if page.get("newStartPageToken"):
                for folder in new_folders:  # a folder moved in: what it holds was never listed, nor changed
                    self._list_folder(tree, folder)
                return str(page["newStartPageToken"])
            if not page.get("nextPageToken"):
                raise ApiError("a changes page ended with neither a next nor a new start page token")
            params["pageToken"] = str(page["nextPageToken"])
        raise ApiError(f"the changes went past {_MAX_PAGES:,} pages")

    def _apply(self, tree: dict[str, dict], change: dict) -> list[str]:
        """One change applied; the folder it brought into the tree, if any (to be listed)."""
        file_id = str(change.get("fileId") or "")
        entry = change.get("file") if isinstance(change.get("file"), dict) else {}
        if change.get("removed") or entry.get("trashed") or not entry:
            tree.pop(file_id, None)
            return []
        parents = entry.get("parents") or []
        parent = str(parents[0]) if parents else ""
        inside = parent == self.config.folder or parent in tree
        if not inside:
            tree.pop(file_id, None)  # moved out of the folder (or never in it): not kept
            return []
        new = file_id not in tree
        _put(tree, entry, parent)
        return [file_id] if new and entry.get("mimeType") == _FOLDER else []

    # files

    def _load(self, item_id: str, relative: str, item: dict) -> Document | Unchanged | LoadFailure:
        version = str(item.get("v") or "") or None
        if version is not None and self.known_versions.get(relative) == version:
            return Unchanged(relative)
        limit = self.settings.max_document_bytes
        size = item.get("s")
        try:
            if isinstance(size, str) and size.isdigit():
                check_size(int(size), limit)
        except DocumentLoadError as exc:
            return LoadFailure(relative, exc.message)
        export = _EXPORTS.get(str(item.get("m")))
        path = f"/drive/v3/files/{quote(item_id, safe='')}"
        try:
            if export:
                data = self._get(f"{path}/export", {"mimeType": export[0]}, limit)
                parsed = parse_document(data, item["n"] + export[1], settings=self.settings, suffix=export[1])
            else:
                data = self._get(path, {"alt": "media", "supportsAllDrives": "true"}, limit)
                parsed = parse_document(data, item["n"], settings=self.settings)
        except DocumentLoadError as exc:
            return LoadFailure(relative, _explained(exc) if isinstance(exc, ApiError) else exc.message)
        title = item["n"] if export else (parsed.title or item["n"])
        return Document(
            page_content=parsed.text,
            metadata={"locator": relative, "version": version, "title": title, "url": item.get("u")},
        )

    # HTTP

    def _paged(self, path: str, params: dict, key: str) -> Iterator[dict]:
        for _ in range(_MAX_PAGES):
            page = self._json(path, params)
            yield from (entry for entry in page.get(key, []) if isinstance(entry, dict))
            if not page.get("nextPageToken"):
                return
            params = params | {"pageToken": str(page["nextPageToken"])}
        raise ApiError(f"{path} went past {_MAX_PAGES:,} pages")

    def _drive_params(self) -> dict:
        params = {"supportsAllDrives": "true", "includeItemsFromAllDrives": "true"}
        if self.config.shared_drive:
            params |= {"corpora": "drive", "driveId": self.config.shared_drive}
        return params

    def _json(self, path: str, params: dict) -> dict:
        return api_json(self._client, self._url(path, params | self._drive_params()), limit=_MAX_API_BYTES)

    def _get(self, path: str, params: dict, limit: int) -> bytes:
        return api_bytes(self._client, self._url(path, params), limit=limit)

    def _url(self, path: str, params: dict) -> str:
        return f"{self.config.api_url}{path}?{urlencode(params)}"


def _put(tree: dict[str, dict], entry: dict, parent: str) -> bool:
    """``entry`` (a Drive file resource) into the tree under ``parent``; False for one without an id."""
    item_id = str(entry.get("id") or "")
    if not item_id:
        return False
    item = {"p": parent, "n": str(entry.get("name") or item_id).replace("/", "_"), "m": entry.get("mimeType")}
    if entry.get("mimeType") == _FOLDER:
        item["d"] = True
    else:
        item |= {"v": entry.get("version"), "s": entry.get("size"), "u": entry.get("webViewLink")}
    tree[item_id] = item
    return True


def _explained(exc: ApiError) -> str:
    hints = {
        401: "Google refused the service account's token: check its key in the web credentials file",
        403: "the service account may not read it: share the folder (or the shared drive) with its e-mail",
        404: "no such folder or file, or it is not shared with the service account",
    }
    hint = hints.get(exc.status_code or 0)
    return f"{exc.message} ({hint})" if hint else exc.message


@hookimpl
def register_connectors(register):
    register(GoogleDriveConnector)
