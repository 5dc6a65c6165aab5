"""Catalog locks (kadapt.locks): one holder at a time across threads (and processes) sharing the catalog, a
lease that a live holder keeps and a dead one loses. Real SQLite here, PostgreSQL under ``.ci/scaleout``."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from kadapt.catalog import utcnow
from kadapt.catalog.models import CatalogLock
from kadapt.locks import LockHolder, acquire, held, holder, release, renew


def test_of_threads_racing_for_a_free_lock_exactly_one_gets_it(catalog):
    start, results = threading.Barrier(8), {}

    def race(owner: str) -> None:
        start.wait()
        results[owner] = acquire(catalog, "race", owner, 60)

    threads = [threading.Thread(target=race, args=(f"t{index}",)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    winners = [owner for owner, won in results.items() if won]
    assert len(winners) == 1 and holder(catalog, "race") == winners[0]
    assert not renew(catalog, "race", "someone-else", 60)  # only the holder renews
    release(catalog, "race", "someone-else")  # nor releases
    assert holder(catalog, "race") == winners[0]
    release(catalog, "race", winners[0])
    assert holder(catalog, "race") is None and acquire(catalog, "race", "next", 60)


def test_an_expired_lease_is_taken_over_by_one_of_two_racing_threads(catalog):
    assert acquire(catalog, "stale", "dead-process", 60)
    with catalog.session() as session:  # its holder died a while ago: the lease ran out
        session.get(CatalogLock, "stale").expires_at = utcnow() - timedelta(seconds=1)
    assert holder(catalog, "stale") is None
    start, results = threading.Barrier(2), {}

    def take(owner: str) -> None:
        start.wait()
        results[owner] = acquire(catalog, "stale", owner, 60)

    threads = [threading.Thread(target=take, args=(owner,)) for owner in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(results.values()) == [False, True]
    assert not renew(catalog, "stale", "dead-process", 60)  # the old holder learns it lost the lock


def test_held_waits_for_the_holder_then_names_it(catalog):
    assert acquire(catalog, "busy", "job-1", 60)
    with pytest.raises(LockHolder) as refused, held(catalog, "busy", "job-2", 60, wait_seconds=0):
        pass
    assert refused.value.owner == "job-1"
    release(catalog, "busy", "job-1")
    with held(catalog, "busy", "job-2", 60) as lost:
        assert holder(catalog, "busy") == "job-2" and not lost.is_set()
    assert holder(catalog, "busy") is None


def test_a_sync_that_lost_the_kbs_lock_writes_nothing_more(catalog, tmp_path):
    """The lease renewer sets ``lost`` when the catalog was unreachable for a whole lease: another sync or a
    deletion may hold the lock now, so the sync stops before its next write."""
    import threading

    from kadapt.catalog import Source
    from kadapt.ingest import SourceSync, SyncStats
    from kadapt.jobs import JobCancelled
    from kadapt.kbs import add_source, create_kb
    from kadapt.settings import get_settings
    from kadapt.store import get_store

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A\n\nA document.\n")
    kb = create_kb(catalog, "locked")
    source = add_source(catalog, get_settings(), "locked", "files", {"path": str(tmp_path / "docs")})
    with catalog.session() as session:
        source = session.get(Source, source.id)
    lost = threading.Event()
    sync = SourceSync(catalog, get_store(), get_settings(), kb, source, SyncStats(), None, lost)
    sync.check_alive()  # the lock is held: goes on
    lost.set()
    with pytest.raises(JobCancelled, match="lost the KB's lock"):
        sync.check_alive()
