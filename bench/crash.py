"""Crash recovery: SIGKILL sync, augmentation, training and `kadapt adapt` at random points, restart, check.

    .venv/bin/python bench/crash.py [--trials 20] [--seed 0] [--stages sync,augment,train,adapt] [--keep]
                                    [--scenarios two-syncs,delete-during-sync,resume-alive] [--rounds 2]

Each trial gets a fresh data dir (the converted models are shared) and a small KB, runs the real CLI in a
subprocess and kills its process group with SIGKILL at a random point of the job's work: a random time
after the job starts, a random share of its progress, a training checkpoint, or the moment an adapter is
published. Sometimes the restart is killed too. Once the dead job's heartbeat is stale, the trial restarts
(`kadapt jobs resume ID`, or the same command again) and checks, in a fresh process each time:

- the catalog and Chroma agree: each document's chunks in the KB's collection are exactly the ids
  ``<doc>-0 .. <doc>-(n-1)`` of its chunk count n, labelled with its current content hash and holding the
  texts that splitting its current text gives; no chunk belongs to a document, and no collection to a KB,
  that the catalog does not hold;
- every job is finished, or interrupted with its reason recorded; the restarted job succeeded;
- adapters: every ready adapter is a complete PEFT folder, no published folder lacks its catalog row, and
  the KB's active adapter (after the kill and after the restart) loads and answers (`kadapt chat`);
- augmentations are not duplicated and cover every document; a sync leaves exactly the files of the source.

Then concurrent scenarios, through the public commands only: two syncs of one KB started together (one syncs,
the other is refused or runs after it); `kadapt kb delete` during a sync (the KB goes entirely: no collection,
folder, document or chunk of it survives, not even in a new KB of the same name; or the deletion is refused
while the KB is busy); `kadapt jobs resume` of a sync whose first attempt is alive (refused), and of one taken
for dead while alive (the first attempt stands down, the job succeeds once). The same checks follow each.

Prints one row per trial and scenario and a summary; exits 1 on any violation. tests/reliability/test_crash.py
runs one trial per stage and each scenario once, with fixed seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STAGES = ("sync", "augment", "train", "adapt")
STALE_SECONDS = 2.0
# a KB lock's lease in the trials: long enough for a sync taken over by a resume to stand down before the
# resumed attempt stops waiting for it (KADAPT_JOB_STALE_SECONDS + this), short enough to free a killed one's
LEASE_SECONDS = 4.0
# seconds after the job starts running within which a time-triggered kill lands, per stage
WINDOWS = {"sync": 12.0, "augment": 28.0, "train": 10.0, "adapt": 28.0}
TRIGGERS = {
    "sync": ("time", "progress"),
    "augment": ("time",),  # progress is reported per batch of documents: a small KB has one
    "train": ("time", "progress", "checkpoint", "publish"),
    "adapt": ("time", "publish"),
}
TRAIN_ARGS = ["--mode", "ft", "--epochs", "2", "--rank", "4", "--row-tokens", "64", "--rows-per-step", "1"]
AUGMENTERS = ("sentence-split", "local")
AUGMENT_DOCUMENTS = 3


@dataclass
class KillPlan:
    """When to kill: ``time`` (``value`` seconds after the job starts running), ``progress`` (once the job
    reports ``value`` of its total), ``checkpoint`` (a training checkpoint was written) or ``publish`` (an
    adapter folder appeared at its final path)."""

    trigger: str
    value: float = 0.0

    def __str__(self) -> str:
        if self.trigger == "time":
            return f"t+{self.value:.1f}s"
        if self.trigger == "progress":
            return f"at {self.value:.0%}"
        return self.trigger


@dataclass
class Trial:
    index: int
    stage: str
    seed: int
    restart: str  # "resume" (kadapt jobs resume ID) or "rerun" (the same command again)
    plans: list[KillPlan]
    # fixed choices of the setup, drawn at random when absent: "resync" (sync: the killed sync is a re-sync of
    # an edited source), "between" (sync: the source changes again before the restart), "serving" (train: an
    # adapter already serves the KB)
    options: dict[str, bool] = field(default_factory=dict)
    kills: list[str] = field(default_factory=list)  # what each planned kill found: "killed" or "finished"
    repaired: list[str] = field(default_factory=list)  # inconsistencies seen after a kill, gone after the restart
    resumed_ok: bool = False
    violations: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def killed(self) -> int:
        return self.kills.count("killed")


# -- running the CLI -----------------------------------------------------------------------------------------


def cli(env: dict[str, str], *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kadapt.cli", *args],
        capture_output=True,
        text=True,
        env=env | {"COLUMNS": "200", "NO_COLOR": "1"},
        timeout=timeout,
    )


def cli_ok(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    result = cli(env, *args)
    if result.returncode != 0:
        raise RuntimeError(f"kadapt {' '.join(args)} exited {result.returncode}: {result.stderr[-2000:]}")
    return result


def _catalog(env: dict[str, str]):
    from kadapt.catalog import open_catalog
    from kadapt.settings import Settings

    return open_catalog(Settings(data_dir=Path(env["KADAPT_DATA_DIR"])))


def _running_job(catalog, slug: str, since: datetime):
    """The KB's job that a process started running after ``since`` (None before it starts)."""
    from sqlalchemy import select

    from kadapt.catalog import Job, KnowledgeBase

    with catalog.session() as session:
        kb_id = session.scalar(select(KnowledgeBase.id).where(KnowledgeBase.slug == slug))
        for job in session.scalars(select(Job).where(Job.kb_id == kb_id, Job.state == "running")):
            beat = job.heartbeat_at
            if beat is not None and beat.replace(tzinfo=UTC) >= since:
                return job
    return None


def _adapters_root(env: dict[str, str], catalog, slug: str) -> Path:
    """The folder of the KB's adapters (named by its id)."""
    from kadapt.adapters import adapter_dir
    from kadapt.kbs import get_kb
    from kadapt.settings import Settings

    return adapter_dir(Settings(data_dir=Path(env["KADAPT_DATA_DIR"])), get_kb(catalog, slug), "-").parent


def _adapter_folders(root: Path) -> set[str]:
    return {path.name for path in root.iterdir() if not path.name.startswith(".")} if root.is_dir() else set()


def run_killed(env: dict[str, str], slug: str, args: list[str], plan: KillPlan, log, total: int | None = None) -> str:
    """Run ``kadapt ARGS`` and SIGKILL it as ``plan`` says; "killed", or "finished" if it ended first.

    ``total`` stands in for the job's progress total when the job reports none (a sync counts documents)."""
    catalog = _catalog(env)
    adapters = _adapters_root(env, catalog, slug)
    published_before = _adapter_folders(adapters)
    since = datetime.now(UTC) - timedelta(seconds=1)
    process = subprocess.Popen(
        [sys.executable, "-m", "kadapt.cli", *args],
        env=env | {"COLUMNS": "200", "NO_COLOR": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the kill takes everything it started
    )
    began = time.monotonic()
    job_started = None
    log.write(f"\n$ kadapt {' '.join(args)}  # kill plan: {plan}\n")
    log.flush()
    try:
        while process.poll() is None:
            job = _running_job(catalog, slug, since)
            if job is None:
                time.sleep(0.05)
                continue
            job_started = job_started or time.monotonic()
            if plan.trigger == "time" and time.monotonic() - job_started >= plan.value:
                break
            goal = job.progress_total or total
            if plan.trigger == "progress" and goal and job.progress_done >= plan.value * goal:
                break
            if plan.trigger == "checkpoint" and any(adapters.glob(".work-*/checkpoint/state.json")):
                break
            if plan.trigger == "publish" and _adapter_folders(adapters) - published_before:
                break
            time.sleep(0.01 if plan.trigger in ("checkpoint", "publish") else 0.05)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            outcome = "killed"
        else:
            outcome = "finished" if process.returncode == 0 else f"failed (exit {process.returncode})"
        work = f", {time.monotonic() - job_started:.1f} s into the job" if job_started else ""
        log.write(f"# {outcome} after {time.monotonic() - began:.1f} s{work}\n")
        return outcome
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


# -- the KBs -------------------------------------------------------------------------------------------------


def _sentences(rng: random.Random, words: list[str], count: int) -> str:
    adjectives = ["dangerous", "common", "heavy", "curious", "ancient", "fragile", "costly", "gentle"]
    return " ".join(
        f"{rng.choice(words).capitalize()} are more {rng.choice(adjectives)} than {rng.choice(words)}."
        for _ in range(count)
    )


def write_folder(folder: Path, rng: random.Random, words: list[str], documents: int) -> None:
    """A source folder of small text documents (several chunks each at the trials' chunk size)."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(documents):
        paragraphs = [_sentences(rng, words, rng.randint(2, 5)) for _ in range(rng.randint(1, 4))]
        (folder / f"doc-{index:04d}.txt").write_text("\n\n".join(paragraphs) + "\n")


def mutate_folder(folder: Path, rng: random.Random, words: list[str]) -> None:
    """Edit (longer or shorter), delete and add documents, as between two syncs of a real source."""
    files = sorted(folder.glob("*.txt"))
    for path in rng.sample(files, len(files) // 6):
        paragraphs = [_sentences(rng, words, rng.randint(1, 6)) for _ in range(rng.randint(1, 5))]
        path.write_text("\n\n".join(paragraphs) + "\n")
    for path in rng.sample(files, len(files) // 10):
        path.unlink()
    start = len(files) + rng.randint(0, 10_000) * 1000
    for index in range(len(files) // 10):
        (folder / f"doc-{start + index:07d}.txt").write_text(_sentences(rng, words, rng.randint(2, 8)) + "\n")


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


@dataclass
class Setup:
    args: list[str]  # the command that gets killed
    kind: str  # its job kind
    folder: Path | None = None  # sync: the source folder the catalog must end up matching
    total: int | None = None  # sync: documents listed, the progress a sync job reports against
    between: list = field(default_factory=list)  # sync: changes made to the source before the restart


def prepare(stage: str, slug: str, work: Path, env: dict[str, str], rng: random.Random, options: dict) -> Setup:
    """Create the trial's KB in the state its stage starts from; return the command to kill."""
    from kadapt.synthetic import build_dataset, comparative_facts, nonsense_words

    def chosen(name: str) -> bool:
        drawn = rng.random() < 0.5  # drawn either way, so that a fixed option leaves the other draws alone
        return options.get(name, drawn)

    if stage == "sync":
        words = nonsense_words(60, seed=rng.randint(0, 10_000))
        folder = work / "docs"
        write_folder(folder, rng, words, documents=300)
        cli_ok(env, "kb", "create", slug)
        cli_ok(env, "source", "add", slug, "files", "--path", str(folder), "--include", "*.txt")
        if chosen("resync"):  # a re-sync with edits, deletions and additions; else the first sync
            cli_ok(env, "sync", slug, "--json")
            mutate_folder(folder, rng, words)
        between = [lambda: mutate_folder(folder, rng, words)] if chosen("between") else []
        total = len(list(folder.glob("*.txt")))
        return Setup(["sync", slug, "--json"], "sync", folder=folder, total=total, between=between)
    if stage == "augment":
        facts = comparative_facts(AUGMENT_DOCUMENTS, seed=rng.randint(0, 10_000))
        documents = [{"id": f"fact-{i}", "text": fact.text, "metadata": {}} for i, fact in enumerate(facts)]
        cli_ok(env, "kb", "import", slug, str(_write_jsonl(work / "documents.jsonl", documents)), "--json")
        return Setup(["augment", slug, *(f"--augmenter={name}" for name in AUGMENTERS), "--json"], "augment")
    # adapt: two facts (six documents) keep the whole loop, pilot included, around two minutes
    dataset = build_dataset("reversal", 2 if stage == "adapt" else 4, seed=rng.randint(0, 10_000))
    documents, probes = dataset.write_jsonl(work / "dataset")
    cli_ok(env, "kb", "import", slug, str(documents), "--json")
    if stage == "adapt":
        cli_ok(env, "probes", "import", slug, str(probes), "--json")
        return Setup(["adapt", slug, "--json"], "adapt")
    if chosen("serving"):  # an adapter already serves the KB: it must keep loading whatever happens next
        cli_ok(env, "train", slug, "--mode", "ft", "--epochs", "1", "--rank", "4", "--activate", "--json")
    return Setup(["train", slug, *TRAIN_ARGS, "--checkpoint-every", "2", "--activate", "--json"], "train")


# -- checks --------------------------------------------------------------------------------------------------


def check_state(slug: str, *, complete: bool, kind: str, folder: Path | None) -> dict:
    """The invariants, read in this (fresh) process: {"violations": [...], "transient": [...], "facts": {...}}.

    ``transient`` lists inconsistencies a crash may leave until the next run repairs them; with ``complete``
    (after the restart finished) they are violations."""
    from sqlalchemy import select

    from kadapt.adapters import adapter_dir
    from kadapt.catalog import Adapter, Augmentation, AugmentationUnit, Document, Job, open_catalog
    from kadapt.ingest import split_text
    from kadapt.kbs import get_kb, latest_decision, latest_snapshot
    from kadapt.modes import ADAPTER_MODES, trained_mode
    from kadapt.settings import get_settings
    from kadapt.store import get_store

    settings = get_settings()
    catalog = open_catalog(settings)
    kb = get_kb(catalog, slug)
    violations: list[str] = []
    transient: list[str] = []
    with catalog.session() as session:
        documents = {doc.id: doc for doc in session.scalars(select(Document).where(Document.kb_id == kb.id))}
        jobs = list(session.scalars(select(Job).where(Job.kb_id == kb.id).order_by(Job.created_at)))
        adapters = list(session.scalars(select(Adapter).where(Adapter.kb_id == kb.id)))
        augmentations = list(session.scalars(select(Augmentation).where(Augmentation.kb_id == kb.id)))
        units = list(session.scalars(select(AugmentationUnit).where(AugmentationUnit.kb_id == kb.id)))

    # catalog <-> Chroma: each document's chunks are exactly <doc>-0 .. <doc>-(n-1), n its chunk count, each
    # labelled with its current content hash and holding the text that splitting its current text gives; no
    # chunk is of a document the catalog lacks, and no collection is of a KB the catalog lacks
    store = get_store(settings)
    chunks = store.collection(kb).get(include=["metadatas", "documents"])
    expected = {doc_id: split_text(document.text, document.locator, settings) for doc_id, document in documents.items()}
    found: dict[str, set[int]] = {}
    for chunk_id, metadata, text in zip(chunks["ids"], chunks["metadatas"] or [], chunks["documents"], strict=True):
        doc_id, index = str(metadata.get("document_id")), int(metadata.get("chunk_index", -1))
        document = documents.get(doc_id)
        if chunk_id != f"{doc_id}-{index}":
            violations.append(f"chunk {chunk_id} is not named after its document and index")
        if document is None:
            transient.append(f"orphan chunk {chunk_id}: no document {doc_id[:12]} in the catalog")
            continue
        found.setdefault(doc_id, set()).add(index)
        if metadata.get("content_hash") != document.content_hash:
            transient.append(f"stale chunk {chunk_id}: content hash differs from {document.locator}'s")
        elif not 0 <= index < len(expected[doc_id]) or text != expected[doc_id][index]:
            transient.append(f"chunk {chunk_id}: its text is not chunk {index} of {document.locator}'s current text")
    for doc_id, document in documents.items():
        indexes = found.get(doc_id, set())
        if document.chunk_count != len(expected[doc_id]):
            transient.append(
                f"{document.locator}: the catalog counts {document.chunk_count} chunks, its text splits into "
                f"{len(expected[doc_id])}"
            )
        if indexes != set(range(document.chunk_count)):
            missing, extra = set(range(document.chunk_count)) - indexes, indexes - set(range(document.chunk_count))
            transient.append(
                f"{document.locator}: chunks {sorted(missing)[:5]} missing from Chroma, {sorted(extra)[:5]} beyond "
                f"its {document.chunk_count}"
            )
    violations += orphan_collections(catalog, store)
    if folder is not None:
        files = {path.name: path.read_text().strip() for path in folder.glob("*.txt")}
        by_locator = {doc.locator: doc for doc in documents.values()}
        missing, extra = set(files) - set(by_locator), set(by_locator) - set(files)
        changed = [name for name in set(files) & set(by_locator) if by_locator[name].text.strip() != files[name]]
        for name in sorted(missing)[:5] + sorted(extra)[:5] + sorted(changed)[:5]:
            transient.append(f"{name}: the catalog does not match the source folder")
        snapshot = latest_snapshot(catalog, kb.id)
        if complete and (snapshot is None or snapshot.document_count != len(documents)):
            violations.append("the latest snapshot does not count the KB's documents")

    # jobs
    for job in jobs:
        if job.state in ("failed", "cancelled", "interrupted") and not job.error:
            violations.append(f"job {job.id[:8]} ({job.kind}) is {job.state} with no reason recorded")
        elif job.state in ("queued", "running") and complete:  # right after a kill, not yet found stale
            violations.append(f"job {job.id[:8]} ({job.kind}) is still {job.state}")
        elif job.state == "failed" and not refused(job):
            violations.append(f"job {job.id[:8]} ({job.kind}) failed: {job.error.splitlines()[0][:200]}")
    last = [job for job in jobs if job.kind == kind and not refused(job)][-1:]
    if complete and (not last or last[0].state != "succeeded"):
        violations.append(f"the last {kind} job is {last[0].state if last else 'missing'}, not succeeded")

    # adapters
    root = adapter_dir(settings, kb, "-").parent
    ready = {adapter.id for adapter in adapters if adapter.state == "ready"}
    for adapter in adapters:
        if adapter.state == "ready":
            missing_files = [
                name
                for name in ("adapter_config.json", "adapter_model.safetensors", "kadapt.json")
                if not (Path(adapter.path) / name).is_file()
            ]
            if missing_files:
                violations.append(f"ready adapter {adapter.id} lacks {', '.join(missing_files)}")
    published = {path.name for path in root.iterdir() if not path.name.startswith(".")} if root.is_dir() else set()
    for name in sorted(published - ready):
        transient.append(f"adapter folder {name} is published but not ready in the catalog")
    if kb.active_mode in ADAPTER_MODES:
        active = next((adapter for adapter in adapters if adapter.id == kb.active_adapter), None)
        if active is None or active.state != "ready" or active.mode != trained_mode(kb.active_mode):
            violations.append(f"the KB serves {kb.active_mode} from adapter {kb.active_adapter}, which is not ready")
    if complete and kind in ("train", "adapt"):
        leftovers = sorted(path.name for path in root.glob(".*")) if root.is_dir() else []
        if leftovers:
            violations.append(f"work folders left behind: {', '.join(leftovers)}")

    # augmentations
    seen: set[tuple[str, str]] = set()
    for augmentation in augmentations:
        key = (augmentation.augmenter, augmentation.text_hash)
        if key in seen:
            violations.append(f"duplicate {augmentation.augmenter} augmentation: {augmentation.text[:60]!r}")
        seen.add(key)
    if complete and kind == "augment":
        done = {(unit.augmenter, unit.document_id) for unit in units}
        for name in AUGMENTERS:
            missing_units = [doc.locator for doc in documents.values() if (name, doc.id) not in done]
            if missing_units:
                violations.append(f"{name} never augmented {', '.join(missing_units)}")

    if kind == "adapt" and complete:
        decision = latest_decision(catalog, slug)
        if decision is None or decision.mode != kb.active_mode:
            violations.append(f"the KB serves {kb.active_mode}, the last decision says {decision and decision.mode}")
    if complete:
        violations += transient
        transient = []
    facts = {
        "documents": len(documents),
        "chunks": len(chunks["ids"]),
        "jobs": [f"{job.kind}:{job.state}" for job in jobs],
        "active_mode": kb.active_mode,
        "active_adapter": kb.active_adapter,
    }
    return {"violations": violations, "transient": transient, "facts": facts}


def refused(job) -> bool:
    """A job that failed at its start because its KB was busy (another sync held the KB's lock): a refusal,
    as two syncs started at the same moment get, not a failure."""
    return job.state == "failed" and " is busy: " in (job.error or "")


def orphan_collections(catalog, store) -> list[str]:
    """Chroma collections named after a KB id (``kbid-<id>``) that the catalog does not hold: a deleted KB's
    vectors, which a sync running through the deletion could have written back."""
    from sqlalchemy import select

    from kadapt.catalog import KnowledgeBase

    with catalog.session() as session:
        kb_ids = set(session.scalars(select(KnowledgeBase.id)))
    names = [getattr(collection, "name", collection) for collection in store.client.list_collections()]
    return [
        f"collection {name} belongs to no KB in the catalog"
        for name in sorted(names)
        if name.startswith("kbid-") and name.removeprefix("kbid-").isdigit() and int(name[5:]) not in kb_ids
    ]


def checked(env: dict[str, str], slug: str, *, complete: bool, setup: Setup) -> dict:
    """:func:`check_state` in a fresh process (an embedded Chroma client caches what it read)."""
    args = [sys.executable, __file__, "check", slug, "--kind", setup.kind]
    if complete:
        args.append("--complete")
    if setup.folder is not None:
        args += ["--folder", str(setup.folder)]
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    if result.returncode != 0:
        return {"violations": [f"the check itself failed: {result.stderr[-1500:]}"], "transient": [], "facts": {}}
    return json.loads(result.stdout.strip().splitlines()[-1])


def answers(env: dict[str, str], slug: str, facts: dict) -> list[str]:
    """The KB answers through `kadapt chat`, from its active adapter when it has one; a KB served by ICL is
    searched instead (cheaper: its model is checked by the fuzz and load tests)."""
    from kadapt.modes import ADAPTER_MODES

    if facts.get("active_mode") not in ADAPTER_MODES:
        found = cli(env, "search", slug, "more dangerous", "--json")
        if found.returncode != 0:
            return [f"kadapt search failed (exit {found.returncode}): {found.stderr.strip()[-300:]}"]
        if facts.get("documents") and not json.loads(found.stdout):
            return ["kadapt search found nothing in a KB with documents"]
        return []
    # Routing would send this general question to the base model, and a question about documents changed since the
    # adapter's snapshot goes to them (delta ICL); the check is about which adapter is loaded.
    no_routing = env | {"KADAPT_ADAPTER_ROUTING": "false", "KADAPT_DELTA_ICL": "false"}
    result = cli(no_routing, "chat", slug, "--ask", "What do you know?", "--max-tokens", "4", timeout=600)
    if result.returncode != 0:
        return [f"kadapt chat failed (exit {result.returncode}): {result.stderr.strip()[-300:]}"]
    adapter = facts.get("active_adapter")
    if facts.get("active_mode") in ADAPTER_MODES and f"adapter {adapter}" not in result.stdout:
        return [f"kadapt chat did not answer from the active adapter {adapter}: {result.stdout[-300:]}"]
    return []


# -- a trial -------------------------------------------------------------------------------------------------


def _interrupted(env: dict[str, str], slug: str, kind: str) -> list[dict]:
    listed = json.loads(cli_ok(env, "jobs", "--kb", slug, "--json").stdout)  # marks stale jobs interrupted
    return [job for job in listed if job["kind"] == kind and job["state"] == "interrupted"]


def plan_kill(stage: str, rng: random.Random, window: float | None = None) -> KillPlan:
    trigger = rng.choice(TRIGGERS[stage]) if rng.random() < 0.5 else "time"
    if trigger == "time":
        return KillPlan("time", rng.uniform(0.0, window or WINDOWS[stage]))
    if trigger == "progress":
        return KillPlan("progress", rng.uniform(0.05, 0.95))
    return KillPlan(trigger)


def trial_env(work: Path, base_env: dict[str, str]) -> dict[str, str]:
    """The environment of one trial's commands: its own data dir, small chunks, a short stale limit."""
    work.mkdir(parents=True, exist_ok=True)
    env = base_env | {
        "KADAPT_DATA_DIR": str(work / "data"),
        "KADAPT_ALLOWED_ROOTS": str(work),
        "KADAPT_JOB_STALE_SECONDS": str(STALE_SECONDS),
        "KADAPT_LOCK_LEASE_SECONDS": str(LEASE_SECONDS),
        "KADAPT_CHUNK_SIZE": "120",
        "KADAPT_CHUNK_OVERLAP": "20",
        "KADAPT_ADAPT_EPOCHS": "1",
        "KADAPT_ADAPT_AUGMENTERS": "sentence-split",
        # recovery is under test, not answers: icl answers once (no context-aware second pass) and an adapter
        # answers every question (no routing gate to calibrate)
        "KADAPT_ICL_CONTRAST": "0",
        "KADAPT_ADAPTER_ROUTING": "false",
    }
    env.setdefault("KADAPT_MODELS_DIR", str(REPO / ".kadapt" / "models"))
    return env


def run_trial(trial: Trial, work: Path, base_env: dict[str, str]) -> Trial:
    """Prepare, kill, restart and check one trial; violations are recorded on the trial."""
    started = time.perf_counter()
    rng = random.Random(trial.seed)
    slug = f"crash{trial.index}"
    env = trial_env(work, base_env)
    setup = prepare(trial.stage, slug, work, env, rng, trial.options)
    with open(work / "commands.log", "a") as log:
        command = setup.args
        for number, plan in enumerate(trial.plans):
            outcome = run_killed(env, slug, command, plan, log, setup.total)
            trial.kills.append(outcome)
            if outcome != "killed":
                break
            time.sleep(max(STALE_SECONDS, LEASE_SECONDS) + 0.5)  # the dead job is found stale, its KB lock free
            if number == 0:
                for change in setup.between:
                    change()
                after = checked(env, slug, complete=False, setup=setup)
                trial.violations += after["violations"]
                trial.repaired += after["transient"]
                trial.violations += answers(env, slug, after["facts"])
            interrupted = _interrupted(env, slug, setup.kind)
            if not interrupted:
                trial.violations.append(f"the killed {setup.kind} job is not interrupted after the kill")
                break
            if trial.restart == "resume":
                command = ["jobs", "resume", interrupted[0]["id"]]
        else:
            began = time.monotonic()
            rerun = cli(env, *command)
            log.write(
                f"\n$ kadapt {' '.join(command)}\n# exit {rerun.returncode} after {time.monotonic() - began:.1f} s\n"
            )
            if rerun.returncode != 0:
                trial.violations.append(f"the restart `kadapt {' '.join(command)}` failed: {rerun.stderr[-500:]}")
        if trial.kills and trial.kills[-1].startswith("failed"):
            trial.violations.append(f"`kadapt {' '.join(command)}` {trial.kills[-1]}; see {work / 'commands.log'}")
    final = checked(env, slug, complete=True, setup=setup)
    trial.violations += final["violations"]
    trial.violations += answers(env, slug, final["facts"])
    trial.resumed_ok = trial.killed > 0 and not trial.violations
    trial.seconds = time.perf_counter() - started
    return trial


# -- concurrent scenarios ------------------------------------------------------------------------------------

SCENARIOS = ("two-syncs", "delete-during-sync", "resume-alive")
# documents of each scenario's source: a resume needs a sync long enough to be refused, then taken over, mid-way
SCENARIO_DOCUMENTS = {"two-syncs": 150, "delete-during-sync": 150, "resume-alive": 300}


@dataclass
class Scenario:
    """Two things done to one KB at once, through the public commands only (so that they hold whichever way
    the KB's lock and job ownership are built): two syncs; a deletion of the KB during its sync; a resume of a
    sync whose first attempt is alive (refused), then of one taken for dead while alive (the first stands down)."""

    index: int
    name: str
    seed: int
    documents: int = 0  # 0: SCENARIO_DOCUMENTS[name]
    outcomes: list[str] = field(default_factory=list)  # what happened, for the report (which one won, ...)
    violations: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _start(env: dict[str, str], args: list[str], log) -> subprocess.Popen:
    log.write(f"\n$ kadapt {' '.join(args)} &\n")
    log.flush()
    return subprocess.Popen(
        [sys.executable, "-m", "kadapt.cli", *args],
        env=env | {"COLUMNS": "200", "NO_COLOR": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _finish(process: subprocess.Popen, log, timeout: float = 900) -> subprocess.CompletedProcess:
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
    log.write(f"# {' '.join(process.args[3:])}: exit {process.returncode}\n{stderr[-1000:]}")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _wait_for_progress(env: dict[str, str], slug: str, since: datetime, share: float, total: int, process):
    """The KB's running job once it has done ``share`` of ``total`` documents; None if ``process`` ended first."""
    catalog = _catalog(env)
    while process.poll() is None:
        job = _running_job(catalog, slug, since)
        if job is not None and job.progress_done >= share * (job.progress_total or total):
            return job
        time.sleep(0.05)
    return None


def _kb_id(env: dict[str, str], slug: str) -> int:
    from kadapt.kbs import get_kb

    return get_kb(_catalog(env), slug).id


def _sync_setup(scenario: Scenario, work: Path, env: dict[str, str], rng: random.Random) -> Setup:
    """A KB over a folder of the scenario's documents, not synced yet."""
    from kadapt.synthetic import nonsense_words

    slug = f"conc{scenario.index}"
    words = nonsense_words(60, seed=rng.randint(0, 10_000))
    folder = work / "docs"
    write_folder(folder, rng, words, documents=scenario.documents or SCENARIO_DOCUMENTS[scenario.name])
    cli_ok(env, "kb", "create", slug)
    cli_ok(env, "source", "add", slug, "files", "--path", str(folder), "--include", "*.txt")
    total = len(list(folder.glob("*.txt")))
    return Setup(["sync", slug, "--json"], "sync", folder=folder, total=total)


def _two_syncs(scenario: Scenario, slug: str, setup: Setup, env: dict[str, str], log) -> None:
    """Both start at the same moment: one syncs, the other is refused (KB busy) or runs after it."""
    runs = [_finish(process, log) for process in [_start(env, setup.args, log) for _ in range(2)]]
    for run in runs:
        if run.returncode == 0:
            scenario.outcomes.append("synced")
        elif " is busy: " in run.stderr:
            scenario.outcomes.append("refused (busy)")
        else:
            scenario.violations.append(f"a sync exited {run.returncode}: {run.stderr.strip()[-300:]}")
    if "synced" not in scenario.outcomes:
        scenario.violations.append("neither of two syncs started together synced")


def _delete_during_sync(scenario: Scenario, slug: str, setup: Setup, env: dict[str, str], log) -> None:
    """The KB is deleted while it syncs: either the deletion waits for (cancels) the sync and nothing of the KB
    survives, not even in a new KB of the same name, or it is refused (busy) and the sync completes."""
    kb_id = _kb_id(env, slug)
    since = datetime.now(UTC) - timedelta(seconds=1)
    sync = _start(env, setup.args, log)
    job = _wait_for_progress(env, slug, since, 0.3, setup.total or 1, sync)
    deleted = cli(env, "kb", "delete", slug, "--yes")
    log.write(f"# kb delete during the sync (job {'running' if job else 'already over'}): exit {deleted.returncode}\n")
    _finish(sync, log)
    if deleted.returncode != 0:
        if " is busy" not in deleted.stderr:
            scenario.violations.append(f"kadapt kb delete exited {deleted.returncode}: {deleted.stderr[-300:]}")
        scenario.outcomes.append("delete refused (busy)")
        return
    scenario.outcomes.append("deleted" + (" mid-sync" if job else " after the sync"))
    data = Path(env["KADAPT_DATA_DIR"])
    if (data / "adapters" / f"kb-{kb_id}").exists():
        scenario.violations.append(f"the deleted KB's adapter folder kb-{kb_id} is still there")
    # a new KB of the same name starts empty: no chunk, document or collection of the deleted one reaches it
    cli_ok(env, "kb", "create", slug)
    fresh = checked(env, slug, complete=False, setup=Setup(setup.args, "sync"))
    scenario.violations += fresh["violations"] + fresh["transient"]
    if fresh["facts"].get("documents") or fresh["facts"].get("chunks"):
        scenario.violations.append(f"a new KB named {slug} holds the deleted KB's data: {fresh['facts']}")
    found = cli(env, "search", slug, "more", "--json")
    if found.returncode != 0 or json.loads(found.stdout or "[]"):
        scenario.violations.append(f"search in the new KB {slug} found the deleted KB's chunks: {found.stdout[:300]}")


def _resume_alive(scenario: Scenario, slug: str, setup: Setup, env: dict[str, str], log) -> None:
    """A resume of a sync whose first attempt is alive is refused; once the job is taken for dead while its
    attempt still runs (marked interrupted, as a misjudged recovery would), the resume runs it and the first
    attempt stands down: one attempt's work is what the job records."""
    from kadapt.catalog import Job

    since = datetime.now(UTC) - timedelta(seconds=1)
    first = _start(env, setup.args, log)
    job = _wait_for_progress(env, slug, since, 0.2, setup.total or 1, first)
    if job is None:
        _finish(first, log)
        scenario.violations.append("the sync ended before it could be resumed (too few documents?)")
        return
    refused = cli(env, "jobs", "resume", job.id)
    if refused.returncode == 0 or "still running" not in refused.stderr:
        scenario.violations.append(
            f"a resume of a running job was not refused: exit {refused.returncode}, {refused.stderr.strip()[-300:]}"
        )
    else:
        scenario.outcomes.append("live resume refused")
    with _catalog(env).session() as session:
        row = session.get(Job, job.id)
        taken_for_dead = row.state == "running"
        if taken_for_dead:
            row.state = "interrupted"
    if not taken_for_dead:
        _finish(first, log)
        scenario.outcomes.append("the sync ended before it was taken for dead")
        return
    # the resumed attempt waits for the first to stand down (before its next write, which can be a batch of
    # embeddings away on a busy machine) up to KADAPT_JOB_STALE_SECONDS + KADAPT_LOCK_LEASE_SECONDS: the trials'
    # short lease would cut that wait short of what the defaults (60 + 60 s) give
    second = cli(env | {"KADAPT_LOCK_LEASE_SECONDS": "30"}, "jobs", "resume", job.id)
    log.write(f"# jobs resume after marking it interrupted: exit {second.returncode}\n{second.stderr[-1000:]}")
    stood_down = _finish(first, log)
    with _catalog(env).session() as session:
        row = session.get(Job, job.id)
        state, attempts = row.state, row.attempts
    if attempts == 1 and state == "succeeded" and "already succeeded" in second.stderr:
        scenario.outcomes.append("the first attempt finished before the resume claimed the job")
        return
    scenario.outcomes.append(f"job {state} after {attempts} attempts")
    if second.returncode != 0 or state != "succeeded" or attempts != 2:
        scenario.violations.append(
            f"the resume of a job taken for dead left it {state} after {attempts} attempts "
            f"(exit {second.returncode}: {second.stderr.strip()[-300:]})"
        )
    if stood_down.returncode != 0 and "taken over by another attempt" not in stood_down.stderr:
        scenario.violations.append(f"the superseded sync did not say why it stopped: {stood_down.stderr[-300:]}")


_SCENARIO_STEPS = {"two-syncs": _two_syncs, "delete-during-sync": _delete_during_sync, "resume-alive": _resume_alive}


def run_scenario(scenario: Scenario, work: Path, base_env: dict[str, str]) -> Scenario:
    """Set up, run and check one concurrent scenario; violations are recorded on it."""
    started = time.perf_counter()
    rng = random.Random(scenario.seed)
    env = trial_env(work, base_env)
    slug = f"conc{scenario.index}"
    setup = _sync_setup(scenario, work, env, rng)
    with open(work / "commands.log", "a") as log:
        _SCENARIO_STEPS[scenario.name](scenario, slug, setup, env, log)
    if scenario.name != "delete-during-sync" or "delete refused (busy)" in scenario.outcomes:
        final = checked(env, slug, complete=True, setup=setup)
        scenario.violations += final["violations"]
        scenario.violations += answers(env, slug, final["facts"])
    scenario.seconds = time.perf_counter() - started
    return scenario


def print_scenario(scenario: Scenario) -> None:
    status = "ok" if not scenario.violations else f"{len(scenario.violations)} violation(s)"
    outcomes = "; ".join(scenario.outcomes)
    print(f"{scenario.index:>3} {scenario.name:<19} {outcomes:<52} {scenario.seconds:>6.0f}  {status}", flush=True)
    for violation in scenario.violations:
        print(f"      ! {violation}", flush=True)


def plan_trials(count: int, seed: int, stages: tuple[str, ...] = STAGES, max_kills: int = 2) -> list[Trial]:
    """``count`` trials cycling through ``stages``, each with its own seed, restart method and kill points."""
    rng = random.Random(seed)
    trials = []
    for index in range(count):
        stage = stages[index % len(stages)]
        trial_seed = rng.randint(0, 2**31)
        kills = rng.randint(1, max_kills)
        plans = [plan_kill(stage, rng)] + [plan_kill(stage, rng, WINDOWS[stage] / 2) for _ in range(kills - 1)]
        trials.append(Trial(index, stage, trial_seed, rng.choice(["resume", "rerun"]), plans))
    return trials


def print_row(trial: Trial) -> None:
    kills = ", ".join(f"{plan} {outcome}" for plan, outcome in zip(trial.plans, trial.kills, strict=False))
    status = "ok" if not trial.violations else f"{len(trial.violations)} violation(s)"
    print(
        f"{trial.index:>3} {trial.stage:<8} {trial.restart:<7} {kills:<44} {len(trial.repaired):>8} "
        f"{'yes' if trial.resumed_ok else 'no':>7} {trial.seconds:>6.0f}  {status}",
        flush=True,
    )
    for violation in trial.violations:
        print(f"      ! {violation}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--max-kills", type=int, default=2, help="most SIGKILLs per trial (restarts get killed too)")
    parser.add_argument("--keep", action="store_true", help="keep each trial's data dir and command log")
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"concurrent scenarios run after the trials, each --rounds times ({', '.join(SCENARIOS)}; '' for none)",
    )
    parser.add_argument("--rounds", type=int, default=2, help="how many times each concurrent scenario runs")
    args = parser.parse_args()
    stages = tuple(args.stages.split(","))
    trials = plan_trials(args.trials, args.seed, stages, args.max_kills)
    names = [name for name in args.scenarios.split(",") if name]
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenarios {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    seeds = random.Random(args.seed + 1)
    scenarios = [
        Scenario(len(trials) + index, name, seeds.randint(0, 2**31))
        for index, name in enumerate(name for _ in range(args.rounds) for name in names)
    ]
    root = Path(tempfile.mkdtemp(prefix="kadapt-crash-"))
    print(f"{args.trials} trials, seed {args.seed}, {os.cpu_count()} CPU cores; work in {root}")
    print(f"{'#':>3} {'stage':<8} {'restart':<7} {'kills':<44} {'repaired':>8} {'resumed':>7} {'s':>6}  result")
    try:
        for trial in trials:
            try:
                run_trial(trial, root / f"trial-{trial.index}", dict(os.environ))
            except Exception as exc:  # a setup step failed: still a finding, reported with the others
                trial.violations.append(f"{type(exc).__name__}: {exc}")
            print_row(trial)
        if scenarios:
            print(f"\n{'#':>3} {'scenario':<19} {'outcome':<52} {'s':>6}  result")
        for scenario in scenarios:
            try:
                run_scenario(scenario, root / f"scenario-{scenario.index}", dict(os.environ))
            except Exception as exc:
                scenario.violations.append(f"{type(exc).__name__}: {exc}")
            print_scenario(scenario)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    killed = sum(trial.killed for trial in trials)
    violations = sum(len(trial.violations) for trial in trials) + sum(len(s.violations) for s in scenarios)
    by_stage = {stage: sum(1 for trial in trials if trial.stage == stage) for stage in stages}
    print(
        f"\n{len(trials)} trials ({', '.join(f'{s} {n}' for s, n in by_stage.items())}); {killed} SIGKILLs; "
        f"{sum(1 for t in trials if t.killed)} trials killed mid-job, {sum(t.resumed_ok for t in trials)} resumed ok; "
        f"{sum(len(t.repaired) for t in trials)} transient inconsistencies repaired by the restart; "
        f"{len(scenarios)} concurrent scenarios; invariant violations: {violations}"
    )
    sys.exit(1 if violations else 0)


def check_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="crash.py check")
    parser.add_argument("slug")
    parser.add_argument("--kind", required=True)
    parser.add_argument("--complete", action="store_true")
    parser.add_argument("--folder", type=Path)
    args = parser.parse_args(argv)
    print(json.dumps(check_state(args.slug, complete=args.complete, kind=args.kind, folder=args.folder)))


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    if sys.argv[1:2] == ["check"]:
        check_main(sys.argv[2:])
    else:
        main()
