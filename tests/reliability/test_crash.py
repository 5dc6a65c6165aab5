"""A few trials of the crash harness (bench/crash.py): SIGKILL a sync, an augmentation, a training run and
`kadapt adapt` mid-job, restart, and check that the catalog agrees with Chroma, that every job finished or
was interrupted with its reason recorded, and that the active adapter loads and answers."""

from __future__ import annotations

import os

import pytest
from bench.crash import KillPlan, Trial, run_trial

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
