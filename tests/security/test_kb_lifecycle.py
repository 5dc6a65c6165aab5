"""A KB's life: the models it may be created with, one sync at a time, a deletion that leaves nothing behind
for the next KB of the same name, and a name that does not say whether an invisible KB holds it.

Syncs run for real (the in-process runner's thread, the real embedding model and Chroma), through a test
connector that stops after its first document until the test lets it go, so a deletion, a second sync or a
source removal lands while the sync is under way."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator

import pytest
from langchain_core.documents import Document as LCDocument
from sqlalchemy import select

from kadapt.catalog import Adapter, Job, KnowledgeBase
from kadapt.connectors import Connector, ConnectorConfig
from kadapt.hookspecs import hookimpl
from tests.conftest import run_kadapt

SECRET = "The zebra vault opens with code 4417 every Tuesday."
_names = itertools.count()


class Gate:
    """Holds a gated source's sync after its first document until ``go`` is set."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.go = threading.Event()


GATE = Gate()


class GatedConnector(Connector):
    kind = "test-gated"
    description = "test: yields its texts, pausing after the first until the test's gate opens"

    class Config(ConnectorConfig):
        texts: list[str]

    def load(self) -> Iterator[LCDocument]:
        for index, text in enumerate(self.config.texts):
            if index == 1:
                GATE.reached.set()
                GATE.go.wait(120)
            yield LCDocument(page_content=text, metadata={"locator": f"doc-{index}", "title": f"doc {index}"})


class _Plugin:
    @hookimpl
    def register_connectors(self, register):
        register(GatedConnector)


@pytest.fixture
def gated(env):
    """The gated connector registered for the test; every sync thread finished at the end."""
    from kadapt.plugins import get_plugins

    global GATE
    GATE = Gate()
    plugins = get_plugins()
    name = plugins.register(_Plugin(), name="test-gated")
    try:
        yield GATE
    finally:
        GATE.go.set()
        join_syncs()
        plugins.unregister(name)


def join_syncs() -> None:
    from kadapt.plugins import get_plugins

    for thread in list(get_plugins().job_runners()["inprocess"].threads.values()):
        thread.join(60)


def gated_kb(env, prefix: str) -> str:
    from kadapt.kbs import add_source, create_kb

    slug = f"{prefix}-{next(_names)}"
    create_kb(env.catalog, slug, reader_groups=["staff"], owner_groups=["hr"])
    texts = [f"{SECRET} ({slug})", "Lunch is served at noon.", "Parking is free."]
    add_source(env.catalog, env.settings, slug, "test-gated", {"texts": texts})
    return slug


def start_sync(client, env, slug: str, gate: Gate) -> str:
    response = client.post(f"/v1/kbs/{slug}/sync", headers=env.headers("editor_owner"))
    assert response.status_code == 202, response.text
    assert gate.reached.wait(60), "the sync never reached its second document"
    return response.json()["id"]


def job_row(env, job_id: str) -> Job | None:
    with env.catalog.session() as session:
        return session.get(Job, job_id)


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.05)


def in_background(call) -> tuple[threading.Thread, dict]:
    box: dict = {}
    thread = threading.Thread(target=lambda: box.setdefault("response", call()), daemon=True)
    thread.start()
    return thread, box


def chunks_in_chroma(text: str) -> list[str]:
    """Names of the Chroma collections (of any KB, live or deleted) that hold a chunk containing ``text``."""
    from kadapt.store import get_store

    store = get_store()
    found = []
    for collection in store.client.list_collections():
        name = collection if isinstance(collection, str) else collection.name
        if store.client.get_collection(name).get(where_document={"$contains": text}, include=[])["ids"]:
            found.append(name)
    return found


# -- finding 2: the models a KB may be created with ----------------------------------------------------------


@pytest.mark.parametrize(
    "model", ["lora-server:finance", "openai:gpt-4o-mini", "/srv/other-team/checkpoint", "Qwen/Qwen2.5-7B"]
)
def test_a_kb_cannot_borrow_a_model_or_adapter_the_admin_did_not_list(env, model):
    client = env.client()
    for principal in ("editor_owner", "admin"):
        slug = f"borrow-{next(_names)}"
        response = client.post("/v1/kbs", json={"slug": slug, "base_model": model}, headers=env.headers(principal))
        assert response.status_code == 403, response.text
        message = response.json()["error"]["message"]
        assert repr(model) in message and "'smollm2-135m'" in message and "KADAPT_ALLOWED_MODELS" in message
        assert client.get(f"/v1/kbs/{slug}", headers=env.headers("admin")).status_code == 404


def test_listed_models_and_the_default_are_accepted_and_lora_server_names_never(env):
    client = env.client(allowed_models=["smollm2-135m", "openai:gpt-4o-mini"])
    listed = client.post(
        "/v1/kbs",
        json={"slug": f"listed-{next(_names)}", "base_model": "openai:gpt-4o-mini"},
        headers=env.headers("editor_owner"),
    )
    assert listed.status_code == 201 and listed.json()["base_model"] == "openai:gpt-4o-mini"
    default = client.post("/v1/kbs", json={"slug": f"plain-{next(_names)}"}, headers=env.headers("editor_owner"))
    assert default.status_code == 201 and default.json()["base_model"] == env.settings.default_model

    from kadapt.settings import Settings

    with pytest.raises(ValueError, match="never a model a KB is created with"):
        Settings(allowed_models="smollm2-135m,lora-server:finance")


def test_the_cli_follows_the_admins_list_with_a_clear_error(env):
    refused = run_kadapt("kb", "create", f"cli-{next(_names)}", "--model", "lora-server:finance")
    assert refused.returncode == 1
    assert "lora-server:finance" in refused.stderr + refused.stdout
    assert "KADAPT_ALLOWED_MODELS" in refused.stderr + refused.stdout
    accepted = run_kadapt("kb", "create", f"cli-{next(_names)}", "--model", "smollm2-135m", "--json")
    assert accepted.returncode == 0, accepted.stderr


# -- a name does not say whether a KB the caller cannot see holds it ----------------------------------------


def test_a_name_taken_by_an_invisible_kb_is_only_not_available(env):
    from kadapt.kbs import create_kb

    slug = f"mergers-{next(_names)}"
    create_kb(env.catalog, slug, reader_groups=["sales"], owner_groups=["sales"])
    client = env.client()
    hidden = client.post("/v1/kbs", json={"slug": slug}, headers=env.headers("editor_owner"))
    assert hidden.status_code == 409
    assert hidden.json()["error"]["message"] == f"KB name {slug!r} is not available; choose another name"

    own = f"own-{next(_names)}"
    assert client.post("/v1/kbs", json={"slug": own}, headers=env.headers("editor_owner")).status_code == 201
    again = client.post("/v1/kbs", json={"slug": own}, headers=env.headers("editor_owner"))
    assert again.status_code == 409 and "already exists" in again.json()["error"]["message"]


# -- finding 4 and one sync per KB ---------------------------------------------------------------------------


def test_a_kb_deleted_during_its_sync_leaves_nothing_to_the_next_kb_of_its_name(env, gated):
    client = env.client()
    slug = gated_kb(env, "reborn")
    job_id = start_sync(client, env, slug, gated)

    deletion, box = in_background(lambda: client.delete(f"/v1/kbs/{slug}", headers=env.headers("editor_owner")))
    # the deletion asks the sync to stop; the sync then goes on to its next write, where it stops
    wait_until(
        lambda: not deletion.is_alive() or (job_row(env, job_id) and job_row(env, job_id).cancel_requested),
        "the deletion to cancel the sync",
    )
    gated.go.set()
    deletion.join(120)
    assert box["response"].status_code == 204, box["response"].text
    join_syncs()

    created = client.post(
        "/v1/kbs", json={"slug": slug, "reader_groups": ["staff"]}, headers=env.headers("editor_owner")
    )
    assert created.status_code == 201
    hits = client.get(f"/v1/kbs/{slug}/search", params={"q": "zebra vault code"}, headers=env.headers("admin"))
    assert hits.status_code == 200 and hits.json() == []
    assert chunks_in_chroma(f"({slug})") == []  # not even in a collection no KB uses


def test_a_deletion_waits_for_the_sync_and_answers_409_when_it_does_not_stop(env, gated):
    client = env.client(kb_busy_wait_seconds=0.2)
    slug = gated_kb(env, "busy")
    job_id = start_sync(client, env, slug, gated)

    refused = client.delete(f"/v1/kbs/{slug}", headers=env.headers("editor_owner"))

    assert refused.status_code == 409 and int(refused.headers["Retry-After"]) >= 1
    assert job_id in refused.json()["error"]["message"]
    shown = client.get(f"/v1/kbs/{slug}", headers=env.headers("editor_owner"))
    assert shown.status_code == 200 and shown.json()["status"]["sources"] == 1  # nothing was deleted
    gated.go.set()
    wait_until(lambda: job_row(env, job_id).state in ("cancelled", "succeeded", "failed"), "the sync to end")
    assert client.delete(f"/v1/kbs/{slug}", headers=env.headers("editor_owner")).status_code == 204


def test_a_second_sync_of_a_kb_is_refused_with_409_naming_the_running_one(env, gated):
    client = env.client()
    slug = gated_kb(env, "twice")
    job_id = start_sync(client, env, slug, gated)

    second = client.post(f"/v1/kbs/{slug}/sync", headers=env.headers("editor_owner"))

    assert second.status_code == 409, second.text
    assert job_id in second.json()["error"]["message"] and "Retry-After" in second.headers
    with env.catalog.session() as session:  # no second job was left behind
        assert len(list(session.scalars(select(Job.id).where(Job.kb_id == job_row(env, job_id).kb_id)))) == 1
    gated.go.set()
    wait_until(lambda: job_row(env, job_id).state == "succeeded", "the first sync to succeed")
    again = client.post(f"/v1/kbs/{slug}/sync", headers=env.headers("editor_owner"))
    assert again.status_code == 202  # the lock went with the sync


def test_a_source_removed_during_its_sync_leaves_no_orphan_chunks(env, gated):
    from kadapt.kbs import get_kb, list_sources
    from kadapt.store import get_store

    client = env.client()
    slug = gated_kb(env, "orphans")
    source_id = list_sources(env.catalog, slug)[0].id
    job_id = start_sync(client, env, slug, gated)

    removal, box = in_background(
        lambda: client.delete(f"/v1/kbs/{slug}/sources/{source_id}", headers=env.headers("editor_owner"))
    )
    removal.join(2)  # the old code removed at once, before the sync wrote its chunks
    gated.go.set()
    removal.join(120)

    assert box["response"].status_code == 204, box["response"].text
    wait_until(lambda: job_row(env, job_id).state in ("cancelled", "succeeded", "failed"), "the sync to end")
    collection = get_store().collection(get_kb(env.catalog, slug))
    assert collection.get(where={"source_id": source_id}, include=[])["ids"] == []
    assert collection.count() == 0 and chunks_in_chroma(f"({slug})") == []


def test_a_deleted_kb_takes_its_adapters_and_their_lora_server_export_with_it(env):
    import json

    from kadapt.kbs import create_kb
    from kadapt.lora_server import LORA_MODULES_FILE, export_dir, lora_modules
    from tests.models.fake_vllm import FakeVLLM

    slug = f"adapted-{next(_names)}"
    kb = create_kb(env.catalog, slug, reader_groups=["staff"], owner_groups=["hr"])
    folder = env.settings.data_dir / "adapters" / f"kb-{kb.id}" / "a1"
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text("{}")
    exported = export_dir(env.settings) / slug
    exported.mkdir(parents=True, exist_ok=True)
    (exported / "adapter_config.json").write_text("{}")
    modules = lora_modules(export_dir(env.settings))
    modules.append({"name": slug, "path": str(exported), "base_model_name": "HuggingFaceTB/SmolLM2-135M-Instruct"})
    (export_dir(env.settings) / LORA_MODULES_FILE).write_text(json.dumps(modules))
    with env.catalog.session() as session:
        session.add(Adapter(id=f"a{kb.id}", kb_id=kb.id, mode="ft", base_model="smollm2-135m", path=str(folder)))
        session.get(KnowledgeBase, kb.id).active_adapter = f"a{kb.id}"
        session.get(KnowledgeBase, kb.id).active_mode = "ft"

    with FakeVLLM("HuggingFaceTB/SmolLM2-135M-Instruct") as server:
        fake = server
        fake.adapters[slug] = str(exported)
        client = env.client(lora_server_url=fake.url + "/v1")
        assert client.delete(f"/v1/kbs/{slug}", headers=env.headers("editor_owner")).status_code == 204

    assert not folder.exists() and not exported.exists()
    assert all(module["name"] != slug for module in lora_modules(export_dir(env.settings)))
    assert [call.body for call in fake.calls("/v1/unload_lora_adapter")] == [{"lora_name": slug}]
    assert slug not in fake.adapters


def test_legacy_collections_are_renamed_to_the_id_name_and_never_inherited(env):
    """A KB made before collections were named by id keeps its vectors; a new KB of a deleted KB's name
    does not take the old ``kb-<slug>`` collection that deletion left behind (the bug this fixes)."""
    from kadapt.kbs import create_kb, get_kb
    from kadapt.store import get_store

    store = get_store()
    old, orphan = f"legacy-{next(_names)}", f"orphan-{next(_names)}"
    for slug in (old, orphan):
        create_kb(env.catalog, slug)
        store.client.create_collection(f"kb-{slug}", embedding_function=store.embedding).add(
            ids=["c1"], documents=[SECRET], metadatas=[{"document_id": "d", "locator": "l", "source_id": 1}]
        )
    with env.catalog.session() as session:  # as migration 0007 leaves a KB made before it
        session.scalar(select(KnowledgeBase).where(KnowledgeBase.slug == old)).legacy_slug = old

    assert [hit.locator for hit in store.search(get_kb(env.catalog, old), "zebra vault", k=1)] == ["l"]
    names = {c if isinstance(c, str) else c.name for c in store.client.list_collections()}
    assert f"kbid-{get_kb(env.catalog, old).id}" in names and f"kb-{old}" not in names
    assert store.search(get_kb(env.catalog, orphan), "zebra vault", k=1) == []
