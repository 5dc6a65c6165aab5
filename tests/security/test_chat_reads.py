"""Chat reads a KB's texts only when it will use them (finding 6): the decision between the whole KB and
retrieval comes from the snapshot's character total, and a KB that cannot fit the prompt is never read."""

from __future__ import annotations

import re
from contextlib import contextmanager

import pytest
from sqlalchemy import event, func, select

QUESTION = [{"role": "user", "content": "When does the canteen open?"}]


@pytest.fixture(scope="module")
def chat(env):
    """prepare_chat on a KB made of ``texts`` (file name -> text), synced, with the real model and store."""
    from kadapt.kbs import add_source, create_kb, get_kb
    from kadapt.models import ModelPool
    from kadapt.plugins import get_plugins
    from kadapt.serving import prepare_chat
    from kadapt.store import get_store
    from kadapt.sync import sync_kb

    model = ModelPool(env.settings, get_plugins()).get("smollm2-135m")
    store = get_store(env.settings)

    def make(name: str, texts: dict[str, str]):
        folder = env.root / name
        folder.mkdir()
        for filename, text in texts.items():
            (folder / filename).write_text(text)
        create_kb(env.catalog, name, title=name)
        add_source(env.catalog, env.settings, name, "files", {"path": str(folder)})
        sync_kb(env.catalog, name)
        kb = get_kb(env.catalog, name)
        return lambda settings=env.settings: prepare_chat(
            env.catalog, store, kb, model, QUESTION, settings, max_tokens=16
        )

    return make


@contextmanager
def statements(catalog):
    """The SQL statements the catalog runs inside the block."""
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement)

    event.listen(catalog.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(catalog.engine, "before_cursor_execute", record)


def reads_texts(seen: list[str]) -> bool:
    """Whether a statement fetched document texts (a length() summed by the database fetches none)."""
    return any(re.search(r"(?<!length\()documents\.text", statement) for statement in seen)


def test_a_kb_too_large_for_the_prompt_is_never_read(env, chat):
    texts = {
        f"policy-{i}.md": f"# Policy {i}\n\n" + f"Rule {i}: the canteen opens at noon on weekdays. " * 12
        for i in range(20)
    }
    prepare = chat("toolarge", texts)  # ~12,000 characters: over 6 per token of a 1,024-token budget
    with statements(env.catalog) as seen:
        prepared = prepare()
    assert prepared.mode == "icl-retrieval" and prepared.sources
    assert seen and not reads_texts(seen)


def test_a_kb_that_fits_is_read_and_put_whole_in_the_prompt(env, chat):
    from kadapt.catalog import Document, Snapshot

    texts = {
        "canteen.md": "# Canteen\n\nThe canteen opens at noon.\n",
        "badges.md": "# Badges\n\nBadges renew in March.\n",
    }
    prepare = chat("fits", texts)
    with statements(env.catalog) as seen:
        prepared = prepare()
    assert prepared.mode == "icl-whole-kb" and reads_texts(seen)
    system = prepared.messages[0]["content"]
    assert "The canteen opens at noon." in system and "Badges renew in March." in system
    assert [source.locator for source in prepared.sources][0] == "canteen.md"  # most relevant first
    with env.catalog.session() as session:
        recorded = session.scalar(select(Snapshot.text_chars).order_by(Snapshot.id.desc()).limit(1))
        actual = session.scalar(
            select(func.sum(func.length(Document.text))).where(Document.locator.in_(["canteen.md", "badges.md"]))
        )
    assert recorded == actual == sum(len(text.strip()) for text in texts.values())


def test_the_decision_stays_exact_under_the_character_bound(env, chat):
    """A KB of few characters but many tokens (digits cost a token each) is read, measured with the tokenizer,
    and served by retrieval: the totals only spare reading a KB that cannot fit."""
    digits = " ".join(str(i % 10) for i in range(150))  # 299 characters, ~150 tokens
    prepare = chat("dense", {"digits.md": f"# Digits\n\n{digits}\n"})
    small_budget = env.settings.model_copy(update={"icl_context_tokens": 64})  # 384 characters may fit
    with statements(env.catalog) as seen:
        prepared = prepare(small_budget)
    assert reads_texts(seen) and prepared.mode == "icl-retrieval"
    assert prepare().mode == "icl-whole-kb"  # with the default budget of 1,024 tokens it fits


def test_a_snapshots_token_total_is_counted_once_and_kept(env, chat):
    from kadapt.catalog import Snapshot
    from kadapt.kb_limits import kb_tokens
    from kadapt.kbs import get_kb, latest_snapshot

    chat("counted", {"canteen.md": "# Canteen\n\nThe canteen opens at noon.\n"})
    kb = get_kb(env.catalog, "counted")
    snapshot = latest_snapshot(env.catalog, kb.id)
    tokens = kb_tokens(env.catalog, kb, snapshot, env.settings)
    with env.catalog.session() as session:
        assert session.get(Snapshot, snapshot.id).token_counts == {kb.base_model: tokens}
    with statements(env.catalog) as seen:
        assert kb_tokens(env.catalog, kb, snapshot, env.settings) == tokens
    assert not reads_texts(seen)
