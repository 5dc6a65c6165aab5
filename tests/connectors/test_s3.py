"""The s3 connector against a real S3-compatible server on 127.0.0.1 (moto's server mode): conformance,
incremental syncs that read only changed objects (seen in the server's request log), deletions, outages, the
size limit, config validation and credentials kept out of the catalog."""

from __future__ import annotations

import io
import itertools
import json
import re

import pytest

from kadapt.errors import ConfigError, InvalidInput, KadaptError
from kadapt.settings import get_settings
from kadapt_s3 import S3Config, S3Connector, s3_credentials
from tests.connectors.conformance import ConnectorConformance, SourceUnderTest, documents, load
from tests.connectors.s3server import S3Server

_buckets = itertools.count()
KEY = {"access_key_id": "AKIAHANDBOOK", "secret_access_key": "s3cr3t-handbook"}
STORE_KEY = {"access_key_id": "AKIASTORE", "secret_access_key": "s3cr3t-store"}


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("s3") / "requests.log")
    yield server
    server.stop()


def docx(text: str) -> bytes:
    import docx as python_docx

    document = python_docx.Document()
    document.add_heading("Expenses", level=1)
    document.add_paragraph(text)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


@pytest.fixture
def bucket(kadapt_env, monkeypatch, s3):
    monkeypatch.setenv("KADAPT_ALLOW_PRIVATE_NETWORKS", "true")  # the server is on 127.0.0.1
    credentials_file(kadapt_env, monkeypatch, {s3.url: STORE_KEY})  # moto takes any key for every bucket
    name = f"kb-{next(_buckets)}-{kadapt_env.name[-6:].lower().replace('_', '-')}"
    client = s3.client()
    client.create_bucket(Bucket=name)
    client.put_object(Bucket=name, Key="handbook/leave.md", Body=b"# Leave\nLeave requests go through Workday.")
    client.put_object(Bucket=name, Key="handbook/desk.txt", Body=b"The service desk answers at extension 199.")
    client.put_object(Bucket=name, Key="handbook/expenses.docx", Body=docx("Receipts are due within 27 days."))
    client.put_object(Bucket=name, Key="handbook/", Body=b"")  # a "folder" marker, as consoles create
    client.put_object(Bucket=name, Key="archive/old.md", Body=b"# Old\nOutside the prefix.")
    return name


def config(s3, bucket, **extra) -> dict:
    return {"bucket": bucket, "prefix": "handbook/", "endpoint": s3.url} | extra


class TestS3Conformance(ConnectorConformance):
    @pytest.fixture
    def source(self, kadapt_env, s3, bucket):
        client = s3.client()
        settings = config(s3, bucket)

        def change():
            client.put_object(Bucket=bucket, Key="handbook/desk.txt", Body=b"The service desk moved to extension 200.")
            return "handbook/desk.txt"

        def remove():
            client.delete_object(Bucket=bucket, Key="handbook/leave.md")
            return "handbook/leave.md"

        def break_one():
            client.put_object(Bucket=bucket, Key="handbook/expenses.docx", Body=b"not a zip archive")
            return "handbook/expenses.docx"

        def make_unavailable():  # the store goes away: nothing listens on its port any more
            from tests.conftest import free_port

            settings["endpoint"] = f"http://127.0.0.1:{free_port()}"

        return SourceUnderTest(S3Connector, settings, kadapt_env / "w", change, remove, break_one, make_unavailable)


def object_reads(requests, bucket) -> list[str]:
    """The object keys a sync downloaded (GET of /bucket/key; a listing is GET /bucket?list-type=2)."""
    prefix = f"/{bucket}/"
    return sorted(
        path.removeprefix(prefix) for method, path, _ in requests if method == "GET" and path.startswith(prefix)
    )


def test_a_kb_sync_reads_only_changed_objects_and_deletes_what_left_the_bucket(kadapt_env, s3, bucket, catalog, store):
    from kadapt.kbs import add_source, create_kb, get_kb
    from kadapt.sync import sync_kb

    create_kb(catalog, "handbook")
    add_source(catalog, get_settings(), "handbook", "s3", config(s3, bucket))
    mark = s3.mark()
    first = sync_kb(catalog, "handbook")
    assert (first.added, first.failed, first.source_errors) == (3, 0, [])
    assert object_reads(s3.since(mark), bucket) == ["handbook/desk.txt", "handbook/expenses.docx", "handbook/leave.md"]
    kb = get_kb(catalog, "handbook")
    hit = store.search(kb, "When are receipts due?", k=1)[0]
    assert (hit.locator, "27 days" in hit.text) == ("handbook/expenses.docx", True)

    mark = s3.mark()
    again = sync_kb(catalog, "handbook")
    assert (again.skipped_unread, again.added, again.updated, again.deleted) == (3, 0, 0, 0)
    assert object_reads(s3.since(mark), bucket) == []  # one listing, no object read

    client = s3.client()
    client.put_object(Bucket=bucket, Key="handbook/desk.txt", Body=b"The service desk moved to extension 200.")
    client.delete_object(Bucket=bucket, Key="handbook/leave.md")
    mark = s3.mark()
    third = sync_kb(catalog, "handbook")
    assert object_reads(s3.since(mark), bucket) == ["handbook/desk.txt"]
    assert (third.skipped_unread, third.updated, third.deleted) == (1, 1, 1)
    hit = store.search(kb, "service desk extension", k=1)[0]
    assert (hit.locator, "extension 200" in hit.text) == ("handbook/desk.txt", True)
    assert all(result.locator != "handbook/leave.md" for result in store.search(kb, "leave requests Workday", k=5))


def test_an_outage_or_a_vanished_bucket_deletes_nothing(kadapt_env, s3, bucket, catalog, store):
    from kadapt.kbs import add_source, create_kb, kb_status
    from kadapt.sync import sync_kb

    create_kb(catalog, "handbook")
    add_source(catalog, get_settings(), "handbook", "s3", config(s3, bucket))
    assert sync_kb(catalog, "handbook").added == 3
    client = s3.client()
    for key in ("handbook/leave.md", "handbook/desk.txt", "handbook/expenses.docx", "handbook/", "archive/old.md"):
        client.delete_object(Bucket=bucket, Key=key)
    client.delete_bucket(Bucket=bucket)
    stats = sync_kb(catalog, "handbook")
    assert stats.deleted == 0
    [error] = stats.source_errors
    assert f"cannot list bucket {bucket!r} at {s3.url}: NoSuchBucket (HTTP 404)" in error
    assert "check the bucket name and endpoint" in error
    assert kb_status(catalog, store, "handbook")["documents"] == 3


def test_an_object_over_the_size_limit_is_a_document_error_without_a_download(kadapt_env, s3, bucket, monkeypatch):
    monkeypatch.setenv("KADAPT_MAX_DOCUMENT_BYTES", "50000")
    get_settings.cache_clear()
    s3.client().put_object(Bucket=bucket, Key="handbook/huge.txt", Body=b"x" * 60_000)
    source = SourceUnderTest(S3Connector, config(s3, bucket), kadapt_env / "w", str, str, str)
    mark = s3.mark()
    items = load(source)
    failures = {item.locator: item.message for item in items if hasattr(item, "message")}
    assert failures == {
        "handbook/huge.txt": "object is 60,000 bytes, over the limit of 50,000 (KADAPT_MAX_DOCUMENT_BYTES)"
    }
    assert "handbook/huge.txt" not in object_reads(s3.since(mark), bucket)
    assert set(documents(items)) == {"handbook/leave.md", "handbook/desk.txt", "handbook/expenses.docx"}


def test_include_and_exclude_patterns_apply_to_keys_under_the_prefix(kadapt_env, s3, bucket):
    source = SourceUnderTest(S3Connector, config(s3, bucket, exclude=["*.docx"]), kadapt_env / "w", str, str, str)
    assert set(documents(load(source))) == {"handbook/leave.md", "handbook/desk.txt"}
    source.config = config(s3, bucket, prefix="")
    assert "archive/old.md" in documents(load(source))


@pytest.mark.parametrize(
    "field, value, problem",
    [
        ("bucket", "Bad_Bucket", "is not an S3 bucket name"),
        ("bucket", "a/../b", "is not an S3 bucket name"),
        ("bucket", "--endpoint-url=x", "is not an S3 bucket name"),
        ("endpoint", "file:///etc/passwd", "is not an http(s) URL"),
        ("endpoint", "https://user:secret@minio.example", "may not hold credentials"),
        ("endpoint", "https://minio.example/other-bucket", "scheme://host[:port] only"),
        ("endpoint", "https://key:secret@minio.example:99999", "is not a valid URL"),
        ("region", "us-east-1; rm -rf", "is not a region name"),
        ("prefix", "a\nb", "printable"),
    ],
)
def test_config_refuses_what_is_not_a_bucket_endpoint_region_or_prefix(field, value, problem):
    from kadapt.connectors import validate_config

    with pytest.raises(InvalidInput, match=re.escape(problem)) as raised:
        validate_config(S3Connector, {"bucket": "handbook"} | {field: value})
    assert f"{field}: " in raised.value.message and "secret" not in raised.value.message


def test_a_private_endpoint_is_refused_without_the_setting(kadapt_env, monkeypatch):
    monkeypatch.delenv("KADAPT_ALLOW_PRIVATE_NETWORKS", raising=False)
    get_settings.cache_clear()
    source = SourceUnderTest(
        S3Connector, {"bucket": "handbook", "endpoint": "http://127.0.0.1:9000"}, kadapt_env, str, str, str
    )
    with pytest.raises(KadaptError, match="127.0.0.1"):
        load(source)


def credentials_file(kadapt_env, monkeypatch, entries) -> None:
    path = kadapt_env / "secrets" / "s3.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(entries if isinstance(entries, str) else json.dumps(entries))
    monkeypatch.setenv("KADAPT_S3_CREDENTIALS", str(path))
    get_settings.cache_clear()


def test_credentials_are_found_by_bucket_then_store_and_never_by_another_endpoint(kadapt_env):
    path = kadapt_env / "s3.json"
    store_key = {"access_key_id": "AKIASTORE", "secret_access_key": "x"}
    aws_key = {"access_key_id": "AKIAAWS", "secret_access_key": "y"}
    path.write_text(
        json.dumps({"https://minio.corp:9000/handbook": KEY, "https://minio.corp:9000/": store_key, "s3://": aws_key})
    )
    assert s3_credentials((path,), "https://minio.corp:9000", "handbook").access_key_id == "AKIAHANDBOOK"
    assert s3_credentials((path,), "https://minio.corp:9000", "reports").access_key_id == "AKIASTORE"
    assert s3_credentials((path,), None, "handbook").access_key_id == "AKIAAWS"
    assert s3_credentials((path,), "https://evil.example", "handbook") is None  # another store gets no key


@pytest.mark.parametrize(
    "content, problem",
    [
        ("{not json", "is not valid"),
        ('["a list"]', "expected a JSON object"),
        (json.dumps({"s3://": {"access_key_id": "AKIA", "secret_access_key": "s3cr3t\n"}}), "control or non-ASCII"),
        (json.dumps({"s3://": {"access_key_id": "AKIA", "secret_access_key": "s3cr3t", "x": 1}}), "Extra inputs"),
    ],
)
def test_a_bad_credentials_file_fails_the_sync_naming_the_file_never_a_secret(kadapt_env, content, problem):
    path = kadapt_env / "s3.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=problem) as raised:
        s3_credentials((path,), None, "handbook")
    assert str(path) in raised.value.message and "s3cr3t" not in raised.value.message


def client_of(kadapt_env, s3, bucket):
    from kadapt.connectors import ConnectorContext

    context = ConnectorContext(settings=get_settings(), source_id=1, work_dir=kadapt_env)
    return S3Connector(S3Config.model_validate(config(s3, bucket)), context)._client()


def test_the_bucket_is_signed_with_its_entry_and_never_with_the_servers_aws_credentials(
    kadapt_env, s3, bucket, monkeypatch
):
    from botocore import UNSIGNED

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIASERVERSOWN")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "server-secret")
    monkeypatch.delenv("KADAPT_S3_CREDENTIALS")
    get_settings.cache_clear()
    anonymous = client_of(kadapt_env, s3, bucket)
    assert anonymous.meta.config.signature_version is UNSIGNED  # no entry: anonymous, not the server's key
    credentials_file(kadapt_env, monkeypatch, {f"{s3.url}/{bucket}": KEY, s3.url: STORE_KEY})
    signed = client_of(kadapt_env, s3, bucket)
    assert signed._request_signer._credentials.access_key == "AKIAHANDBOOK"
    assert len(documents(load(SourceUnderTest(S3Connector, config(s3, bucket), kadapt_env, str, str, str)))) == 3


def test_credentials_never_reach_the_catalog_or_the_sources_shown(kadapt_env, s3, bucket, catalog, monkeypatch):
    from kadapt.kbs import add_source, create_kb, list_sources
    from kadapt.sync import sync_kb

    credentials_file(kadapt_env, monkeypatch, {f"{s3.url}/{bucket}": KEY})
    create_kb(catalog, "handbook")
    add_source(catalog, get_settings(), "handbook", "s3", config(s3, bucket))
    assert sync_kb(catalog, "handbook").added == 3
    shown = json.dumps([[source.config, source.state] for source in list_sources(catalog, "handbook")], default=str)
    assert bucket in shown and "s3cr3t" not in shown and "AKIAHANDBOOK" not in shown
    database = get_settings().effective_catalog_url
    if database.startswith("sqlite:///"):
        with open(database.removeprefix("sqlite:///"), "rb") as file:
            raw = file.read()
        assert b"s3cr3t-handbook" not in raw and b"AKIAHANDBOOK" not in raw


def test_a_group_owned_kb_uses_its_groups_credentials_file(kadapt_env, s3, monkeypatch):
    from kadapt.allowances import source_allowances

    path = kadapt_env / "hr-s3.json"
    path.write_text(json.dumps({"s3://": KEY}))
    allowances = json.loads(get_settings().model_dump_json(include={"group_allowances"}))["group_allowances"]
    allowances["hr"] = allowances.get("hr", {}) | {"s3_credentials": str(path)}
    monkeypatch.setenv("KADAPT_GROUP_ALLOWANCES", json.dumps(allowances))
    get_settings.cache_clear()
    settings = get_settings()
    assert source_allowances(settings, ["hr"]).s3_credentials == (path,)
    assert source_allowances(settings, ["staff"]).s3_credentials == ()
    assert path in [p.resolve() for p in settings.protected_dirs]  # no files source can read the keys


def test_every_request_goes_through_the_checked_client_not_boto3s_own(kadapt_env, s3, bucket, monkeypatch):
    """The endpoint is checked before a sync, and again at every connection: were boto3 to connect by itself, a
    name that resolved to a public address for the check could point at a private one for the requests."""
    from botocore.exceptions import HTTPClientError

    client = client_of(kadapt_env, s3, bucket)  # built while 127.0.0.1 may be reached
    assert client.list_objects_v2(Bucket=bucket, Prefix="handbook/")["KeyCount"] == 4
    monkeypatch.delenv("KADAPT_ALLOW_PRIVATE_NETWORKS")
    get_settings.cache_clear()
    refused = client_of(kadapt_env, s3, bucket)  # no check() here: only the connection's own check stands
    with pytest.raises(HTTPClientError, match="127.0.0.1"):
        refused.list_objects_v2(Bucket=bucket, Prefix="handbook/")
