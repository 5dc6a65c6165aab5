"""The embedded vector store (kadapt.store) opened by several processes at once, as two syncs, or a sync and the API,
open it on a fresh data dir."""

from __future__ import annotations

import multiprocessing
import traceback
from pathlib import Path
from types import SimpleNamespace

PROCESSES, ROUNDS = 6, 12


def _open_stores(root: str, start, results) -> None:
    """In a process of its own: each round, open the store on the round's fresh data dir when all do."""
    from kadapt.settings import Settings
    from kadapt.store import VectorStore

    for index in range(ROUNDS):
        settings = Settings(data_dir=Path(root) / f"round-{index}", chroma_url=None)
        start.wait()
        try:
            VectorStore(settings).collection(SimpleNamespace(id=1, legacy_slug=None))
            results.put((index, "ok"))
        except Exception:
            results.put((index, traceback.format_exc(limit=2)))


def test_processes_opening_a_fresh_store_at_once_all_get_it(tmp_path):
    """Chroma creates its tables when it first opens a directory; without a lock around that, two processes both
    ran CREATE TABLE and one failed ("table collections already exists")."""
    spawn = multiprocessing.get_context("spawn")
    start, results = spawn.Barrier(PROCESSES, timeout=120), spawn.Queue()
    workers = [spawn.Process(target=_open_stores, args=(str(tmp_path), start, results)) for _ in range(PROCESSES)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=300) for _ in range(PROCESSES * ROUNDS)]
    for worker in workers:
        worker.join(timeout=60)
    failures = [f"round {index}: {outcome}" for index, outcome in outcomes if outcome != "ok"]
    assert not failures, "\n".join(failures[:3])
    assert all(worker.exitcode == 0 for worker in workers)
