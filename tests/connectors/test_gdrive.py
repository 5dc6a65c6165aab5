"""The gdrive connector against the Drive API v3's documented JSON on 127.0.0.1 (tests/connectors/
drive_server.py), signing in as a service account whose JWT the server verifies: conformance, Google Docs and
Sheets exported as text, the changes API reading only what changed (seen in the server's log), folders moved in
and out, trashed files, 429 and a refused key."""

from __future__ import annotations

import json

import pytest

from kadapt.connectors import validate_config
from kadapt.errors import InvalidInput
from kadapt.settings import get_settings
from kadapt_gdrive import GoogleDriveConnector
from tests.connectors.conformance import ConnectorConformance, SourceUnderTest, documents, load
from tests.connectors.drive_server import DOC, FOLDER, SHEET, Drive

ACCOUNT = "kadapt-reader@hr-project.iam.gserviceaccount.com"


@pytest.fixture(scope="module")
def key_pair():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


def credentials(kadapt_env, monkeypatch, drive, private_key) -> None:
    service_account = {
        "type": "service_account",
        "project_id": "hr-project",
        "private_key_id": "k1",
        "private_key": private_key,
        "client_email": ACCOUNT,
        "client_id": "1234",
        "token_uri": f"{drive.base}/token",
    }
    path = kadapt_env / "secrets" / "web.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({drive.base: {"google_service_account": service_account}}))
    monkeypatch.setenv("KADAPT_WEB_CREDENTIALS", str(path))
    get_settings.cache_clear()


@pytest.fixture
def drive(kadapt_env, monkeypatch, key_pair):
    monkeypatch.setenv("KADAPT_ALLOW_PRIVATE_NETWORKS", "true")  # the server is on 127.0.0.1
    with Drive(ACCOUNT, key_pair[1]) as server:
        credentials(kadapt_env, monkeypatch, server, key_pair[0])
        server.add("HR", "root", FOLDER, file_id="hrfolder")
        server.add("Leave policy", "hrfolder", DOC, b"Leave requests go through Workday.")
        server.add("desk.txt", "hrfolder", "text/plain", b"The service desk answers at extension 199.")
        old = server.add("Old", "hrfolder", FOLDER)
        server.add("Expenses", old, SHEET, b"item,deadline\nreceipts,27 days\n")
        server.add("minutes.md", "root", "text/markdown", b"# Minutes\nOutside the folder.")
        yield server


def config(drive, **extra) -> dict:
    return {"folder": "hrfolder", "api_url": drive.base} | extra


def file_id(drive, name) -> str:
    return next(key for key, value in drive.files.items() if value["name"] == name)


class TestGoogleDriveConformance(ConnectorConformance):
    @pytest.fixture
    def source(self, kadapt_env, drive):
        def change():
            drive.add(
                "desk.txt", "hrfolder", "text/plain", b"The desk moved to extension 200.", file_id(drive, "desk.txt")
            )
            return "desk.txt"

        def remove():
            drive.trash(file_id(drive, "desk.txt"))
            return "desk.txt"

        def break_one():  # no longer UTF-8 text
            drive.add("desk.txt", "hrfolder", "text/plain", b"\xff\xfe\x00\x81 broken", file_id(drive, "desk.txt"))
            return "desk.txt"

        def make_unavailable():
            drive.tokens.clear()
            drive.public_key = b"-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n"  # every key refused

        return SourceUnderTest(
            GoogleDriveConnector, config(drive), kadapt_env / "w", change, remove, break_one, make_unavailable
        )


def test_docs_and_sheets_arrive_as_text_and_the_changes_api_reads_only_what_changed(kadapt_env, drive, catalog, store):
    from kadapt.kbs import add_source, create_kb, get_kb
    from kadapt.sync import sync_kb

    create_kb(catalog, "hr")
    add_source(catalog, get_settings(), "hr", "gdrive", config(drive))
    first = sync_kb(catalog, "hr")
    assert (first.added, first.failed, first.source_errors) == (3, 0, [])
    assert drive.reads() == sorted(file_id(drive, name) for name in ("Leave policy", "desk.txt", "Expenses"))
    kb = get_kb(catalog, "hr")
    hit = store.search(kb, "When are receipts due?", k=1)[0]
    assert (hit.locator, "27 days" in hit.text) == ("Old/Expenses", True)  # the Sheet, exported as CSV
    assert store.search(kb, "How do I request leave?", k=1)[0].locator == "Leave policy"

    drive.log.clear()
    second = sync_kb(catalog, "hr")
    assert (second.skipped_unread, second.added, second.updated, second.deleted) == (3, 0, 0, 0)
    assert [path.split("?")[0] for _, path, _ in drive.log if path.startswith("/drive/")] == ["/drive/v3/changes"]

    drive.add(
        "desk.txt", "hrfolder", "text/plain", b"The service desk moved to extension 200.", file_id(drive, "desk.txt")
    )
    drive.trash(file_id(drive, "Leave policy"))
    drive.move(file_id(drive, "Old"), "root")  # its Sheet leaves the folder with it
    travel = drive.add("Travel", "root", FOLDER)
    drive.add("trains.md", travel, "text/markdown", b"# Trains\nBook trains for trips under 500 km.")
    drive.move(travel, "hrfolder")  # a folder moved in: listed, its file read
    drive.log.clear()
    third = sync_kb(catalog, "hr")
    assert drive.reads() == sorted([file_id(drive, "desk.txt"), file_id(drive, "trains.md")])
    assert (third.updated, third.added, third.deleted, third.skipped_unread) == (1, 1, 2, 0)
    assert store.search(kb, "train trips", k=1)[0].locator == "Travel/trains.md"
    assert all(hit.locator not in ("Leave policy", "Old/Expenses") for hit in store.search(kb, "leave receipts", k=5))


def test_rate_limits_are_waited_out(kadapt_env, drive):
    drive.throttle = 1
    source = SourceUnderTest(GoogleDriveConnector, config(drive), kadapt_env, str, str, str)
    assert set(documents(load(source))) == {"Leave policy", "desk.txt", "Old/Expenses"}
    assert [status for _, _, status in drive.log[:3]] == [200, 429, 200]  # the token, then the first call twice


def test_a_refused_key_fails_the_sync_naming_the_account_never_the_key(kadapt_env, drive, catalog, key_pair):
    from kadapt.kbs import add_source, create_kb
    from kadapt.sync import sync_kb

    create_kb(catalog, "hr")
    add_source(catalog, get_settings(), "hr", "gdrive", config(drive))
    drive.public_key = b"-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n"
    stats = sync_kb(catalog, "hr")
    [error] = stats.source_errors
    assert f"Google refused the service account {ACCOUNT!r}" in error
    assert "PRIVATE KEY" not in error and key_pair[0][40:80] not in error


@pytest.mark.parametrize(
    "changes, problem",
    [
        ({"folder": "../../etc"}, "a Drive id is"),
        ({"folder": "abc' or name contains 'x"}, "a Drive id is"),  # no way into the files.list query
        ({"shared_drive": "x y"}, "a Drive id is"),
        ({"api_url": "https://u:p@www.googleapis.com"}, "without credentials"),
        ({"api_url": "https://:secret@www.googleapis.com"}, "without credentials"),
        ({"private_key": "x"}, "Extra inputs"),
    ],
)
def test_config_refuses_what_is_not_a_drive_id_or_api(changes, problem):
    with pytest.raises(InvalidInput) as raised:
        validate_config(GoogleDriveConnector, {"folder": "hrfolder"} | changes)
    assert problem in raised.value.message


def test_an_expired_token_is_renewed_and_a_file_deleted_for_good_leaves(kadapt_env, drive, catalog):
    from kadapt.kbs import add_source, create_kb
    from kadapt.sync import sync_kb

    create_kb(catalog, "hr")
    add_source(catalog, get_settings(), "hr", "gdrive", config(drive))
    assert sync_kb(catalog, "hr").added == 3
    drive.remove(file_id(drive, "desk.txt"))  # emptied from the trash: the change says removed, with no file
    drive.expire_after = 0  # the access token expires before the next request
    drive.log.clear()
    stats = sync_kb(catalog, "hr")
    assert (stats.source_errors, stats.deleted, stats.skipped_unread) == ([], 1, 2)
    calls = [(method, path.split("?")[0], status) for method, path, status in drive.log]
    assert calls[:4] == [
        ("POST", "/token", 200),
        ("GET", "/drive/v3/changes", 401),  # expired: google-auth asks for a new token and the call is made again
        ("POST", "/token", 200),
        ("GET", "/drive/v3/changes", 200),
    ]


def test_two_files_of_one_name_in_a_folder_are_two_documents(kadapt_env, drive):
    twin = drive.add("desk.txt", "hrfolder", "text/plain", b"A second desk note: the night desk answers at 299.")
    source = SourceUnderTest(GoogleDriveConnector, config(drive), kadapt_env, str, str, str)
    loaded = documents(load(source))
    assert {"desk.txt", f"desk.txt ({twin})"} <= set(loaded)
    assert "299" in loaded[f"desk.txt ({twin})"].page_content and "199" in loaded["desk.txt"].page_content
