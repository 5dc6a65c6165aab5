"""The Ray job runner on a real local Ray instance: jobs land in the catalog exactly as with the default
runner, a task that dies leaves its job stopped with a reason, and kadapt starts without Ray."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time

import pytest

from kadapt.synthetic import comparative_facts
from tests.conftest import REPO, clear_caches, run_kadapt

FACTS = comparative_facts(2, seed=3)
TRAIN_CONFIG = {"epochs": 2, "rank": 4, "alpha": 8, "row_tokens": 64, "rows_per_step": 1, "checkpoint_every": 100}


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance started by the runner itself, as ``KADAPT_JOB_RUNNER=ray`` with no address does."""
    from kadapt_ray import RayRunner

    # Ray's socket paths must fit in 107 bytes, which pytest's tmp_path does not guarantee
    temp = tempfile.mkdtemp(prefix="kray-")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_TMPDIR", temp)
        patch.delenv("RAY_ADDRESS", raising=False)
        patch.delenv("KADAPT_RAY_ADDRESS", raising=False)
        patch.chdir(REPO)  # workers import modules from the driver's working directory (tests.jobs.crash_kinds)
        clear_caches()
        ray = RayRunner().connect()
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def use_runner(monkeypatch, name: str) -> None:
    from kadapt.settings import get_settings

    monkeypatch.setenv("KADAPT_JOB_RUNNER", name)
    get_settings.cache_clear()


def build_kb(catalog, slug: str, docs) -> int:
    from kadapt.kbs import add_source, create_kb, get_kb
    from kadapt.settings import get_settings
    from kadapt.sync import sync_kb

    create_kb(catalog, slug, title="Bestiary")
    add_source(catalog, get_settings(), slug, "files", {"path": str(docs)})
    assert sync_kb(catalog, slug).added == 2
    return get_kb(catalog, slug).id


def augment_and_train(catalog, slug: str, kb_id: int) -> tuple[list[str], list[tuple]]:
    """An augmentation job and an aug-ft training job on its output; return their ids and the progress the
    listeners saw."""
    from kadapt.adapters import new_adapter_id
    from kadapt.jobs import submit

    seen: list[tuple] = []
    listeners = [lambda progress: seen.append((progress.done, progress.total, progress.message))]
    # the rule-based augmenter: the model-written ones cost minutes of generation on two CPU cores
    params = {"kb": slug, "augmenters": ["sentence-split"]}
    augment = submit(catalog, "augment", kb_id=kb_id, params=params, listeners=listeners)
    params = {"kb": slug, "mode": "aug-ft", "adapter_id": new_adapter_id(), "config": TRAIN_CONFIG}
    train = submit(catalog, "train", kb_id=kb_id, params=params, listeners=listeners)
    return [augment, train], seen


def augmentations(catalog, kb_id: int) -> list[tuple]:
    from sqlalchemy import select

    from kadapt.catalog import Augmentation, Document

    with catalog.session() as session:
        locators = dict(session.execute(select(Document.id, Document.locator).where(Document.kb_id == kb_id)).all())
        rows = session.scalars(select(Augmentation).where(Augmentation.kb_id == kb_id))
        return sorted(
            (
                row.augmenter,
                row.kind,
                row.text,
                tuple(sorted(locators[document_id] for document_id in row.source_hashes)),
                row.generated_tokens,
            )
            for row in rows
        )


def adapter_stats(catalog, kb_id: int) -> dict:
    from sqlalchemy import select

    from kadapt.catalog import Adapter

    with catalog.session() as session:
        (adapter,) = session.scalars(select(Adapter).where(Adapter.kb_id == kb_id))
        assert adapter.state == "ready" and os.path.exists(os.path.join(adapter.path, "adapter_config.json"))
        return adapter.stats


@pytest.mark.slow
def test_augmentation_and_training_through_ray_land_in_the_catalog_as_in_process(
    local_ray, kadapt_env, catalog, monkeypatch
):
    from kadapt.jobs import get_job

    docs = kadapt_env / "docs"
    docs.mkdir()
    (docs / "bestiary.md").write_text("# Bestiary\n\n" + "\n\n".join(fact.text for fact in FACTS) + "\n")
    (docs / "canteen.md").write_text("# Canteen\n\nThe canteen opens at noon.\n")
    by_ray, in_process = build_kb(catalog, "via-ray", docs), build_kb(catalog, "in-process", docs)

    use_runner(monkeypatch, "ray")
    ray_jobs, ray_progress = augment_and_train(catalog, "via-ray", by_ray)
    use_runner(monkeypatch, "inprocess")
    local_jobs, _ = augment_and_train(catalog, "in-process", in_process)

    for job_id in ray_jobs + local_jobs:
        job = get_job(catalog, job_id)
        assert job.state == "succeeded", job.error
        assert job.progress_total and job.progress_done == job.progress_total and job.attempts == 1
    for job_id in ray_jobs:  # each ran as a Ray task, in a worker process of its own
        job = get_job(catalog, job_id)
        task = re.search(r"Ray task \w+ on \S+ \(node \w+, pid (\d+)\)", job.log)
        assert job.runner == "ray" and task and int(task[1]) != os.getpid(), job.log
    assert get_job(catalog, ray_jobs[0]).result == get_job(catalog, local_jobs[0]).result
    # the submitter's listeners (the CLI's progress bars) followed the Ray jobs through the catalog
    assert len(ray_progress) >= 2 and ray_progress[-1][0] == ray_progress[-1][1] > 0

    ray_rows, local_rows = augmentations(catalog, by_ray), augmentations(catalog, in_process)
    assert ray_rows == local_rows and len(ray_rows) > len(FACTS)
    ray_stats, local_stats = adapter_stats(catalog, by_ray), adapter_stats(catalog, in_process)
    assert ray_stats["augmentations"] == local_stats["augmentations"] and ray_stats["augmentations"]
    assert (ray_stats["examples"], ray_stats["tokens"], ray_stats["steps"]) == (
        local_stats["examples"],
        local_stats["tokens"],
        local_stats["steps"],
    )
    assert ray_stats["final_loss"] == pytest.approx(local_stats["final_loss"], abs=1e-3)

    listed = run_kadapt("jobs", "--kb", "via-ray", "--json")
    assert listed.returncode == 0, listed.stderr
    shown = {job["id"]: job for job in json.loads(listed.stdout)}
    assert set(shown) == set(ray_jobs)
    assert all(job["runner"] == "ray" and job["state"] == "succeeded" for job in shown.values())


def wait_until_stopped(catalog, job_id: str, timeout: float = 60.0):
    from kadapt.jobs import get_job

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = get_job(catalog, job_id)
        if job.state not in ("queued", "running"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {job.state} after {timeout} s")


@pytest.mark.slow
def test_a_job_whose_ray_task_dies_is_stopped_with_a_reason_not_left_running(
    local_ray, kadapt_env, catalog, monkeypatch
):
    from kadapt.jobs import get_job, submit

    monkeypatch.setenv("KADAPT_PLUGINS", "tests.jobs.crash_kinds")
    clear_caches()
    use_runner(monkeypatch, "ray")

    # the worker process dies mid-job (not waited for: the runner's watcher records it)
    died = submit(catalog, "test-crash", params={"how": "exit"}, wait=False)
    job = wait_until_stopped(catalog, died)
    assert job.state == "interrupted" and job.runner == "ray"
    assert "WorkerCrashedError" in job.error and f"kadapt jobs resume {died}" in job.error
    assert (job.progress_done, job.message) == (1, "about to stop")  # what the job wrote before dying is kept
    assert "the Ray task running this job stopped" in job.log

    # an exception that escapes run_job's own error handling
    escaped = submit(catalog, "test-crash", params={"how": "raise"})
    job = get_job(catalog, escaped)
    assert job.state == "failed" and "Escape: escaped the job's error handling" in job.error
    assert job.finished_at is not None


def test_a_task_never_asks_a_local_instance_for_more_cpus_than_it_has(local_ray, kadapt_env, catalog, monkeypatch):
    from kadapt.errors import ConfigError
    from kadapt.jobs import submit
    from kadapt.kbs import create_kb

    use_runner(monkeypatch, "ray")
    monkeypatch.setenv("KADAPT_TORCH_THREADS", str(int(local_ray.cluster_resources()["CPU"]) + 1))
    create_kb(catalog, "any")  # a sync's own check (its KB exists and is not busy) comes first
    with pytest.raises(ConfigError, match="lower it"):  # rather than a task that waits forever
        submit(catalog, "sync", params={"kb": "any"})


def test_the_ray_runner_is_registered_without_ray_and_names_the_install_command(kadapt_env, catalog, monkeypatch):
    from sqlalchemy import select

    from kadapt.catalog import Job
    from kadapt.errors import ConfigError
    from kadapt.jobs import submit
    from kadapt.kbs import create_kb
    from kadapt.plugins import Plugins

    create_kb(catalog, "no-ray")  # a sync's own check (its KB exists and is not busy) comes first
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if Ray were not installed
    assert {"inprocess", "ray"} <= set(Plugins().job_runners())
    use_runner(monkeypatch, "ray")
    with pytest.raises(ConfigError, match=r"pip install 'kadapt\[ray\]'"):
        submit(catalog, "sync", params={"kb": "no-ray"})
    with catalog.session() as session:
        (job,) = [
            job for job in session.scalars(select(Job).where(Job.runner == "ray")) if job.params["kb"] == "no-ray"
        ]
    assert job.state == "failed" and "pip install 'kadapt[ray]'" in job.error  # not left queued forever
