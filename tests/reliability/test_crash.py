"""A few trials of the crash harness (bench/crash.py): SIGKILL a sync, an augmentation, a training run and
`kadapt adapt` mid-job, restart, and check that the catalog agrees with Chroma, that every job finished or
was interrupted with its reason recorded, and that the active adapter loads and answers; and each concurrent
scenario once (two syncs at once, a KB deleted during its sync, a resume of a live sync)."""

from __future__ import annotations

import os

import pytest
from bench.crash import SCENARIOS, KillPlan, Scenario, Trial, run_scenario, run_trial

TRIALS = [
    # a re-sync of an edited source killed halfway through its documents; the source changes again before
    # the sync runs anew
    Trial(0, "sync", 101, "rerun", [KillPlan("progress", 0.5)], {"resync": True, "between": True}),
    # killed while the model writes rephrasings and reversals; the job is resumed
    Trial(1, "augment", 102, "resume", [KillPlan("time", 5.0)]),
    # killed the moment the new adapter is published, before the catalog records it, while another adapter
    # serves the KB
    Trial(2, "train", 103, "resume", [KillPlan("publish")], {"serving": True}),
    # killed mid-pilot, and the restart killed too
    Trial(3, "adapt", 104, "rerun", [KillPlan("time", 8.0), KillPlan("time", 4.0)]),
]


@pytest.mark.slow
@pytest.mark.parametrize("trial", TRIALS, ids=[trial.stage for trial in TRIALS])
def test_a_killed_job_restarts_and_leaves_everything_consistent(kadapt_env, trial):
    run_trial(trial, kadapt_env / "trial", dict(os.environ))
    assert not trial.violations, "\n".join(trial.violations)
    assert trial.kills == ["killed"] * len(trial.plans)  # every kill landed while the job was working


# two syncs of one KB started together, `kadapt kb delete` during a sync, `kadapt jobs resume` of a live sync
SCENARIO_RUNS = [Scenario(10 + index, name, 201 + index) for index, name in enumerate(SCENARIOS)]


@pytest.mark.slow
@pytest.mark.parametrize("scenario", SCENARIO_RUNS, ids=[scenario.name for scenario in SCENARIO_RUNS])
def test_concurrent_commands_on_one_kb_leave_everything_consistent(kadapt_env, scenario):
    run_scenario(scenario, kadapt_env / "scenario", dict(os.environ))
    assert not scenario.violations, "\n".join(scenario.violations)


def test_the_chunk_check_finds_chunks_that_do_not_match_the_catalog(catalog, store, kadapt_env):
    from bench.crash import check_state

    from kadapt.kbs import add_source, create_kb
    from kadapt.settings import get_settings
    from kadapt.sync import sync_kb

    (kadapt_env / "docs").mkdir()
    (kadapt_env / "docs" / "leave.md").write_text("# Leave\n\nEmployees get 27 days of leave.\n")
    kb = create_kb(catalog, "kb")
    add_source(catalog, get_settings(), "kb", "files", {"path": str(kadapt_env / "docs")})
    sync_kb(catalog, "kb")
    clean = check_state("kb", complete=False, kind="sync", folder=None)
    assert clean["violations"] == clean["transient"] == []

    collection = store.collection(kb)
    stored = collection.get(include=["metadatas"])
    chunk_id, metadata = stored["ids"][0], stored["metadatas"][0]
    # the right id and content hash, another text: a chunk left by a sync that raced another one
    collection.upsert(ids=[chunk_id], documents=["Employees get 2 days of leave."], metadatas=[metadata])
    store.client.create_collection("kbid-999")  # the vectors of a KB the catalog no longer holds
    found = check_state("kb", complete=False, kind="sync", folder=None)
    assert any("its text is not chunk 0" in line for line in found["transient"])
    assert "collection kbid-999 belongs to no KB in the catalog" in found["violations"]
