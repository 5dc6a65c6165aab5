"""Generalization probes: held-out questions per snapshot, never used for training.

Every probe has a multiple-choice form and may have a chat form (a natural question and its accepted
answers, judged by :mod:`kadapt.judge`); a probe without one is MC-only. Probe generators
(``register_probe_generators``) get the KB's documents and yield :class:`ProbeDraft` questions; ``kadapt
probes import`` reads any external benchmark in JSON Lines, with its own probe kinds. Each probe belongs to a
snapshot; when a new snapshot arrives, probes whose documents did not change are carried over and the
generators run again for the rest. Probes are scored by the log-likelihood of each choice as a
continuation of the question (:mod:`kadapt.evaluate`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from sqlalchemy import delete, func, select

from kadapt.augment import SourceDocument, kb_documents, normalize
from kadapt.catalog import Catalog, Document, KnowledgeBase, Probe, ProbeUnit, Snapshot, SnapshotDocument, utcnow
from kadapt.errors import InvalidInput
from kadapt.jobs import JobContext
from kadapt.kbs import get_kb, latest_snapshot
from kadapt.settings import Settings, get_settings

__all__ = [
    "KINDS",
    "KIND_PATTERN",
    "ProbeContext",
    "ProbeDraft",
    "ProbeGenerator",
    "balance",
    "generate_probes",
    "import_probes",
    "leaked",
    "probe_text",
    "snapshot_probes",
]

KINDS = ("verbatim", "rephrase", "reversal", "syllogism", "multi-hop", "holdout")  # the built-in generators' kinds
# any other kind is welcome (an external benchmark's "deduction", "membership", ...) if it reads as a name
KIND_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


@dataclass
class ProbeDraft:
    kind: str
    question: str
    choices: list[str]
    answer_index: int
    source_ids: tuple[str, ...] = ()
    provenance: dict[str, Any] = field(default_factory=dict)
    chat_question: str | None = None  # None: MC-only
    answers: list[str] = field(default_factory=list)  # accepted answers of the chat form, aliases included


@dataclass
class ProbeContext:
    kb: KnowledgeBase
    documents: list[SourceDocument]
    settings: Settings
    model_spec: str
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)  # document id -> its metadata
    _model: Any = None

    @property
    def model(self):
        """The generator model, loaded on first use (rule-based generators never load it)."""
        if self._model is None:
            from kadapt.models import get_model_pool

            self._model = get_model_pool().get(self.model_spec)
        return self._model


class ProbeGenerator(Protocol):
    """A generator may set ``uses_model = False`` when it writes probes without the model (cheaply): it then
    runs on every document. Others process at most ``KADAPT_PROBE_DOCUMENTS`` documents per snapshot."""

    name: ClassVar[str]
    description: ClassVar[str]

    def generate(self, documents: Sequence[SourceDocument], context: ProbeContext) -> Iterator[ProbeDraft]:
        """Yield probes for ``documents`` (the KB's documents that have none of this generator's probes)."""


def probe_text(question: str, choice: str) -> str:
    """The text a choice is scored as: the question followed by the choice."""
    return question + ("" if not question or question[-1].isspace() else " ") + choice


def _question_hash(question: str, choices: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps([question, list(choices)]).encode()).hexdigest()


def validate(draft: ProbeDraft, where: str = "probe") -> ProbeDraft:
    """Raise InvalidInput naming the problem when ``draft`` is not a usable probe (its multiple-choice form,
    and its chat form when it has one)."""
    if not isinstance(draft.kind, str) or not KIND_PATTERN.fullmatch(draft.kind):
        raise InvalidInput(
            f"{where}: kind {draft.kind!r} is not a probe kind name; use 1 to 32 lowercase letters, digits, "
            "'-' or '_' (e.g. 'reversal', 'deduction')"
        )
    if not isinstance(draft.question, str) or not draft.question.strip():
        raise InvalidInput(f"{where}: 'question' must be a non-empty string")
    if not isinstance(draft.choices, list) or len(draft.choices) < 2:
        raise InvalidInput(f"{where}: 'choices' must be a list of at least 2 strings")
    if not all(isinstance(choice, str) and choice.strip() for choice in draft.choices):
        raise InvalidInput(f"{where}: every choice must be a non-empty string")
    if len({choice.strip().lower() for choice in draft.choices}) != len(draft.choices):
        raise InvalidInput(f"{where}: choices must differ from each other")
    index = draft.answer_index
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(draft.choices):
        raise InvalidInput(f"{where}: 'answer_index' must be an integer from 0 to {len(draft.choices) - 1}")
    _validate_chat_form(draft, where)
    return draft


def _validate_chat_form(draft: ProbeDraft, where: str) -> None:
    from kadapt.judge import normalise

    if draft.chat_question is None:
        if draft.answers:
            raise InvalidInput(f"{where}: 'answers' without a 'chat_question'; add the question they answer")
        return
    if not isinstance(draft.chat_question, str) or not draft.chat_question.strip():
        raise InvalidInput(f"{where}: 'chat_question' must be a non-empty string (or left out for an MC-only probe)")
    answers = draft.answers
    if not isinstance(answers, list) or not answers or not all(isinstance(a, str) and normalise(a) for a in answers):
        raise InvalidInput(f"{where}: 'answers' must be a non-empty list of accepted answers (strings with words)")
    wrong = {normalise(choice): choice for index, choice in enumerate(draft.choices) if index != draft.answer_index}
    clashing = [answer for answer in answers if normalise(answer) in wrong]
    if clashing:
        raise InvalidInput(
            f"{where}: accepted answer {clashing[0]!r} is also a wrong choice ({wrong[normalise(clashing[0])]!r}); "
            "remove it from 'answers' or from 'choices'"
        )


def _snapshot_members(session, snapshot_id: int) -> dict[str, str]:
    return dict(
        session.execute(
            select(SnapshotDocument.document_id, SnapshotDocument.content_hash).where(
                SnapshotDocument.snapshot_id == snapshot_id
            )
        ).all()
    )


def _add(session, kb_id: int, snapshot_id: int, generator: str, draft: ProbeDraft, hashes: dict[str, str]) -> bool:
    digest = _question_hash(draft.question, draft.choices)
    # the same question with the same choices counts once, whichever generator (or import) brought it
    exists = session.scalar(
        select(Probe.id).where(Probe.snapshot_id == snapshot_id, Probe.question_hash == digest).limit(1)
    )
    if exists is not None:
        return False
    provenance = dict(draft.provenance)
    provenance["source_hashes"] = {doc_id: hashes.get(doc_id) for doc_id in draft.source_ids}
    session.add(
        Probe(
            kb_id=kb_id,
            snapshot_id=snapshot_id,
            generator=generator,
            kind=draft.kind,
            question=draft.question,
            question_hash=digest,
            choices=list(draft.choices),
            answer_index=draft.answer_index,
            chat_question=draft.chat_question,
            answers=list(draft.answers),
            source_ids=list(draft.source_ids),
            provenance=provenance,
        )
    )
    return True


def carry_over(catalog: Catalog, kb_id: int, snapshot: Snapshot) -> int:
    """Copy probes of the KB's previous snapshot whose documents are unchanged in ``snapshot`` (imported
    probes without documents always carry over); returns how many were copied. Idempotent: a probe the
    snapshot already has is not copied again."""
    with catalog.session() as session:
        previous = session.scalar(
            select(Probe.snapshot_id)
            .where(Probe.kb_id == kb_id, Probe.snapshot_id < snapshot.id)
            .order_by(Probe.snapshot_id.desc())
            .limit(1)
        )
        if previous is None:
            return 0
        members = _snapshot_members(session, snapshot.id)
        copied = 0
        for probe in session.scalars(select(Probe).where(Probe.snapshot_id == previous).order_by(Probe.id)):
            hashes = probe.provenance.get("source_hashes", {})
            if all(members.get(doc_id) == hashes.get(doc_id) for doc_id in probe.source_ids):
                draft = ProbeDraft(
                    probe.kind,
                    probe.question,
                    probe.choices,
                    probe.answer_index,
                    tuple(probe.source_ids),
                    chat_question=probe.chat_question,
                    answers=list(probe.answers or []),
                )
                draft.provenance = {key: value for key, value in probe.provenance.items() if key != "source_hashes"}
                copied += _add(session, kb_id, snapshot.id, probe.generator, draft, members)
        return copied


def generate_probes(
    catalog: Catalog,
    slug: str,
    *,
    names: Sequence[str] | None = None,
    imported_only: bool = False,
    context: JobContext | None = None,
    settings: Settings | None = None,
    plugins=None,
) -> dict[str, Any]:
    """Probes for the KB's latest snapshot: carried over where documents are unchanged, then each named
    generator (all when None) runs on the documents it has no probes for yet. With ``imported_only``, a KB
    whose probes were imported (an external benchmark) keeps just those. Returns counts."""
    from kadapt.plugins import check_names, get_plugins

    settings = settings or get_settings()
    registered = (plugins or get_plugins()).contributions("register_probe_generators")
    names = list(names or registered)
    check_names(registered, names, "probe generator")
    kb = get_kb(catalog, slug)
    snapshot = latest_snapshot(catalog, kb.id)
    if snapshot is None:
        raise InvalidInput(f"KB {slug!r} has no documents; run `kadapt sync {slug}` first")
    carried = carry_over(catalog, kb.id, snapshot)
    if imported_only:
        with catalog.session() as session:
            has_imported = session.scalar(
                select(Probe.id).where(Probe.snapshot_id == snapshot.id, Probe.generator == "import").limit(1)
            )
        if has_imported is not None:
            names = []
    documents = kb_documents(catalog, kb.id)
    with catalog.session() as session:
        metadata = dict(session.execute(select(Document.id, Document.meta).where(Document.kb_id == kb.id)).all())
    probe_context = ProbeContext(
        kb=kb, documents=documents, settings=settings, model_spec=kb.base_model, metadata=metadata
    )
    summary: dict[str, Any] = {"snapshot": snapshot.id, "carried_over": carried, "by_generator": {}}
    if context:
        context.progress(done=0, total=len(names), message="generating probes")
    for index, name in enumerate(names):
        counts = _run_generator(catalog, kb, snapshot, name, registered[name], documents, probe_context, settings)
        summary["by_generator"][name] = counts
        if counts["left_out"] and context:
            context.log(
                f"{name}: {counts['left_out']} documents left without probes "
                f"(KADAPT_PROBE_DOCUMENTS={settings.probe_documents})"
            )
        if context:
            context.progress(done=index + 1, message=f"{name}: {counts['added']} probes")
    summary["probes"] = count_probes(catalog, snapshot.id)
    return summary


def _pending(catalog, kb, snapshot, name, generator, documents, settings) -> tuple[list[SourceDocument], int, set]:
    """The documents generator ``name`` has not processed at their content (nor has carried-over probes for),
    capped at KADAPT_PROBE_DOCUMENTS for a model-written generator; (pending, left out, snapshot members)."""
    with catalog.session() as session:
        done = dict(
            session.execute(
                select(ProbeUnit.document_id, ProbeUnit.content_hash).where(
                    ProbeUnit.kb_id == kb.id, ProbeUnit.generator == name
                )
            ).all()
        )
        covered = set()  # documents whose probes this snapshot already has (carried over)
        for source_ids in session.scalars(
            select(Probe.source_ids).where(Probe.snapshot_id == snapshot.id, Probe.generator == name)
        ):
            covered.update(source_ids)
        members = _snapshot_members(session, snapshot.id)
    pending = [doc for doc in documents if done.get(doc.id) != doc.content_hash and doc.id not in covered]
    capped = 0
    if getattr(generator, "uses_model", True):  # model-written probes: a bounded number of documents
        processed = sum(1 for doc in documents if done.get(doc.id) == doc.content_hash or doc.id in covered)
        room = max(0, settings.probe_documents - processed)
        if len(pending) > room:
            capped = len(pending) - room
            pending = sorted(pending, key=_spread_key)[:room]
    return pending, capped, members


def _run_generator(catalog, kb, snapshot, name, generator, documents, probe_context, settings) -> dict[str, int]:
    """Generator ``name`` on the documents it has not processed; each is marked processed (with or without
    probes: a rerun skips it). Returns its counts."""
    pending, capped, members = _pending(catalog, kb, snapshot, name, generator, documents, settings)
    added = 0
    if pending:
        drafts = list(generator.generate(pending, probe_context))
        with catalog.session() as session:
            per_document: Counter[str] = Counter()
            for number, draft in enumerate(drafts, 1):
                validate(draft, f"probe generator {name!r}, probe {number}")
                if _add(session, kb.id, snapshot.id, name, draft, members):
                    added += 1
                    per_document.update(draft.source_ids)
            for doc in pending:
                unit = session.get(ProbeUnit, (kb.id, name, doc.id)) or ProbeUnit(
                    kb_id=kb.id, generator=name, document_id=doc.id
                )
                unit.content_hash, unit.probes, unit.done_at = doc.content_hash, per_document[doc.id], utcnow()
                session.merge(unit)
    return {"documents": len(pending), "added": added, "left_out": capped}


def _spread_key(document: SourceDocument) -> str:
    """A fixed pseudo-random order of documents: its first N are an even spread over the KB's sources and
    topics, and the same documents stay chosen from one run to the next."""
    return hashlib.sha256(document.id.encode()).hexdigest()


def count_probes(catalog: Catalog, snapshot_id: int) -> dict[str, int]:
    with catalog.session() as session:
        rows = session.execute(
            select(Probe.kind, func.count()).where(Probe.snapshot_id == snapshot_id).group_by(Probe.kind)
        )
        return dict(rows.all())


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-empty line of a JSON Lines file; a clear error on a bad line."""
    if not path.is_file():
        raise InvalidInput(f"{path}: no such file")
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidInput(f"{path}:{number}: not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise InvalidInput(f"{path}:{number}: expected a JSON object")
            yield number, record


def import_probes(catalog: Catalog, slug: str, path: Path) -> dict[str, Any]:
    """Read probes ``{"question", "choices", "answer_index", "kind"}`` into the latest snapshot. Optional:
    ``"source_ids"`` (the ids of the documents a probe tests, as given to ``kadapt kb import``) and the chat
    form, ``"chat_question"`` with ``"answers"`` (accepted answers, aliases included; the answer choice
    when left out). A probe without ``chat_question`` is MC-only. ``kind`` may be any short name.

    The whole file is checked first, so a bad line imports nothing. Returns counts, with how many probes
    read have a chat form (``chat``) and how many are MC-only (``mc_only``), and the kinds read."""
    kb = get_kb(catalog, slug)
    snapshot = latest_snapshot(catalog, kb.id)
    if snapshot is None:
        raise InvalidInput(f"KB {slug!r} has no documents; import or sync documents before probes")
    drafts = []
    with catalog.session() as session:
        locators = dict(session.execute(select(Document.locator, Document.id).where(Document.kb_id == kb.id)).all())
        members = _snapshot_members(session, snapshot.id)
    for number, record in _read_jsonl(path):
        where = f"{path}:{number}"
        missing = [key for key in ("question", "choices", "answer_index", "kind") if key not in record]
        if missing:
            raise InvalidInput(f"{where}: missing {', '.join(repr(key) for key in missing)}")
        source_ids = []
        for name in record.get("source_ids") or []:
            if str(name) not in locators:
                raise InvalidInput(f"{where}: source id {name!r} is not a document of KB {slug!r}")
            source_ids.append(locators[str(name)])
        draft = ProbeDraft(
            record["kind"], record["question"], record["choices"], record["answer_index"], tuple(source_ids)
        )
        draft.provenance = {"file": path.name, "line": number}
        draft.chat_question = record.get("chat_question")
        draft.answers = record.get("answers", [])
        if draft.chat_question is not None and "answers" not in record and _valid_index(draft):
            draft.answers = [draft.choices[draft.answer_index]]
        drafts.append(validate(draft, where))
    if not drafts:
        raise InvalidInput(f"{path}: no probes in the file")
    with catalog.session() as session:
        added = sum(_add(session, kb.id, snapshot.id, "import", draft, members) for draft in drafts)
    chat = sum(draft.chat_question is not None for draft in drafts)
    return {
        "read": len(drafts),
        "added": added,
        "duplicates": len(drafts) - added,
        "chat": chat,
        "mc_only": len(drafts) - chat,
        "kinds": dict(Counter(draft.kind for draft in drafts)),
        "snapshot": snapshot.id,
    }


def _valid_index(draft: ProbeDraft) -> bool:
    index = draft.answer_index
    choices = draft.choices
    return (
        isinstance(choices, list)
        and type(index) is int
        and 0 <= index < len(choices)
        and isinstance(choices[index], str)
    )


def snapshot_probes(catalog: Catalog, snapshot_id: int) -> list[Probe]:
    with catalog.session() as session:
        return list(session.scalars(select(Probe).where(Probe.snapshot_id == snapshot_id).order_by(Probe.id)))


def delete_probes(catalog: Catalog, snapshot_id: int, generator: str | None = None) -> int:
    with catalog.session() as session:
        query = delete(Probe).where(Probe.snapshot_id == snapshot_id)
        if generator:
            query = query.where(Probe.generator == generator)
        return session.execute(query).rowcount


def leaked(probes: Iterable[Probe], texts: Iterable[str]) -> set[int]:
    """Ids of non-verbatim probes whose question followed by its answer appears verbatim in ``texts`` (the
    training documents): such a probe tests recall, not generalization, and is left out of the estimates."""
    corpus = "\n".join(normalize(text) for text in texts)
    out = set()
    for probe in probes:
        if probe.kind == "verbatim":
            continue
        if normalize(probe_text(probe.question, probe.choices[probe.answer_index])) in corpus:
            out.add(probe.id)
    return out


def balance(probes: Iterable[Probe]) -> dict[str, dict[str, Any]]:
    """Per kind, how a shortcut would fare: the share of answers at each position, and the accuracy of
    always picking the first, the last, the shortest and the longest choice (chance is what balanced means)."""
    by_kind: dict[str, list[Probe]] = {}
    for probe in probes:
        by_kind.setdefault(probe.kind, []).append(probe)
    out = {}
    for kind, group in sorted(by_kind.items()):
        n = len(group)
        positions = Counter(probe.answer_index for probe in group)

        def share(pick, group=group, n=n) -> float:
            return sum(pick(probe) == probe.answer_index for probe in group) / n

        out[kind] = {
            "n": n,
            "chance": sum(1 / len(probe.choices) for probe in group) / n,
            "answer_positions": {str(index): positions[index] for index in sorted(positions)},
            "first": share(lambda probe: 0),
            "last": share(lambda probe: len(probe.choices) - 1),
            "shortest": share(lambda probe: min(range(len(probe.choices)), key=lambda i: len(probe.choices[i]))),
            "longest": share(lambda probe: max(range(len(probe.choices)), key=lambda i: len(probe.choices[i]))),
        }
    return out
