"""A resumed training run never mixes two data sets in one adapter: a checkpoint is resumed from
only when the training texts and config hash to what it was made from, and a train job resumed after the KB
got a new snapshot is refused (its adapter marked failed), since the old snapshot's data is gone. Real LoRA
training of the packaged model on a few tiny steps."""

from __future__ import annotations

import pytest

from kadapt.catalog import Adapter, Job
from kadapt.synthetic import comparative_facts
from kadapt.training import TrainConfig, train_lora
from tests.conftest import MODELS_DIR

BASE = str(MODELS_DIR / "smollm2-135m-instruct")
FACTS = comparative_facts(6, seed=21)
CONFIG = {"epochs": 3, "rank": 4, "row_tokens": 32, "rows_per_step": 1, "checkpoint_every": 2}


class Crash(BaseException):
    """Stops training as a killed process would: it passes through every ``except Exception``."""


def crash_after_checkpoint(step: int, *_) -> None:
    if step >= 3:  # the checkpoint of step 2 is on disk
        raise Crash


@pytest.fixture(scope="module")
def base_model():
    from kadapt.models import get_model_pool
    from tests.conftest import clear_caches

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KADAPT_MODELS_DIR", str(MODELS_DIR))
        clear_caches()
        get_model_pool().get("smollm2-135m")  # converts the packaged model when needed
        yield BASE


def test_a_checkpoint_of_other_training_data_is_not_resumed_from(tmp_path, base_model):
    texts = [fact.text for fact in FACTS]
    config = TrainConfig(**CONFIG)
    work = tmp_path / "work"
    with pytest.raises(Crash):
        train_lora(base_model, texts, tmp_path / "a", config, work_dir=work, progress=crash_after_checkpoint)
    assert (work / "checkpoint" / "state.json").exists()

    changed = [*texts[:-1], "The canteen opens at noon."]
    result = train_lora(base_model, changed, tmp_path / "a", config, work_dir=work)
    assert (result.resumed_from_step, result.discarded_checkpoint_step) == (0, 2)
    assert result.steps == len(result.loss_curve)  # every step trained on the new data

    # the same texts and config resume as before
    with pytest.raises(Crash):
        train_lora(base_model, texts, tmp_path / "b", config, work_dir=work, progress=crash_after_checkpoint)
    result = train_lora(base_model, texts, tmp_path / "b", config, work_dir=work)
    assert (result.resumed_from_step, result.discarded_checkpoint_step) == (2, 0)


def test_a_train_job_resumed_after_a_new_snapshot_is_refused(kadapt_env, catalog, base_model):
    from kadapt.adapters import new_adapter_id
    from kadapt.jobs import create_job, run_job
    from kadapt.kbs import add_source, create_kb, get_kb, latest_snapshot
    from kadapt.settings import get_settings
    from kadapt.sync import sync_kb

    docs = kadapt_env / "docs"
    docs.mkdir()
    (docs / "bestiary.md").write_text("# Bestiary\n\n" + "\n\n".join(fact.text for fact in FACTS) + "\n")
    kb = create_kb(catalog, "zoo")
    add_source(catalog, get_settings(), "zoo", "files", {"path": str(docs)})
    sync_kb(catalog, "zoo")
    began_on = latest_snapshot(catalog, kb.id).id
    adapter_id = new_adapter_id()
    params = {"kb": "zoo", "mode": "ft", "adapter_id": adapter_id, "config": CONFIG}
    job_id = create_job(catalog, "train", kb_id=kb.id, params=params)

    def crash(context) -> None:
        crash_after_checkpoint(context.done)

    with pytest.raises(Crash):
        run_job(catalog, job_id, listeners=[crash])
    with catalog.session() as session:  # found dead, as recover_interrupted marks it once its heartbeat is stale
        session.get(Job, job_id).state = "interrupted"

    (docs / "bestiary.md").write_text("# Bestiary\n\nThe canteen opens at noon, and nothing else is true.\n")
    sync_kb(catalog, "zoo")
    now_at = latest_snapshot(catalog, get_kb(catalog, "zoo").id).id
    assert now_at != began_on

    job = run_job(catalog, job_id)

    assert job.state == "failed"
    assert f"KB 'zoo' changed since training of adapter {adapter_id} began (on snapshot {began_on}" in job.error
    assert "kadapt train zoo --mode ft" in job.error
    with catalog.session() as session:
        adapter = session.get(Adapter, adapter_id)
        assert (adapter.state, adapter.snapshot_id, adapter.stats) == ("failed", began_on, {})


def test_training_stops_once_two_epochs_in_a_row_learnt_the_texts(tmp_path, base_model):
    """KADAPT_ADAPT_EARLY_STOP_LOSS: a real run stops at the end of the first epoch whose mean loss, and the one
    before it, are at or under the limit, instead of training all its epochs; a limit of 0 trains every epoch."""
    from kadapt.training import converged

    texts = [fact.text for fact in FACTS[:2]]
    config = TrainConfig(**(CONFIG | {"epochs": 40, "learning_rate": 3e-3, "early_stop_loss": 0.5}))
    result = train_lora(base_model, texts, tmp_path / "early", config, work_dir=tmp_path / "work")
    per_epoch = result.rows  # one packed row per step
    assert result.stopped_early and result.steps < 40 * per_epoch and result.steps % per_epoch == 0
    means = [sum(result.loss_curve[at : at + per_epoch]) / per_epoch for at in range(0, result.steps, per_epoch)]
    assert means[-1] <= 0.5 and means[-2] <= 0.5
    assert not any(a <= 0.5 and b <= 0.5 for a, b in zip(means[:-2], means[1:-1], strict=True))  # the first chance
    assert means[0] > 0.5  # it learnt them: it did not start there
    assert (tmp_path / "early" / "kadapt.json").is_file()

    # the rule alone: whole epochs only, the last `early_stop_epochs` of them, never when off
    rule = TrainConfig(epochs=10, early_stop_loss=0.1, early_stop_epochs=2)
    assert converged([0.5, 0.5, 0.1, 0.05, 0.1, 0.1], [2] * 10, rule)
    assert not converged([0.5, 0.5, 0.1, 0.05, 0.1], [2] * 10, rule)  # mid-epoch
    assert not converged([0.5, 0.5, 0.3, 0.05, 0.1, 0.1], [2] * 10, rule)  # 0.175 the epoch before
    assert not converged([0.1, 0.1], [2] * 10, rule)  # one epoch only
    assert not converged([0.0] * 6, [2] * 10, TrainConfig(epochs=10))  # off by default
    # epochs of different lengths (each with its share of the replay examples): means per epoch as they fall
    assert converged([0.5, 0.1, 0.05, 0.05, 0.05, 0.05, 0.05], [1, 3, 3, 2], rule)
    assert not converged([0.5, 0.1, 0.05, 0.05, 0.05, 0.05], [1, 3, 3, 2], rule)  # mid-epoch
    assert not converged([0.5, 0.05, 0.4, 0.05, 0.05, 0.05, 0.05], [1, 3, 3, 2], rule)  # 0.17 in epoch 2
    # a step of replay examples alone has no loss on the texts: the epoch's mean is over the others
    assert converged([0.5, 0.5, 0.1, None, 0.1, 0.05], [2] * 10, rule)
    assert not converged([0.5, 0.5, None, None, 0.1, 0.05], [2] * 10, rule)  # an epoch with nothing to tell
    # max_steps past the last epoch: the epochs begin again, and so do their ends
    again = TrainConfig(epochs=3, early_stop_loss=0.1)
    assert converged([0.5, 0.5, 0.5, 0.5, 0.05, 0.05, 0.05, 0.05], [2, 2, 2], again)


def test_replay_examples_are_spread_over_the_epochs_and_trained_on(tmp_path, base_model):
    """TrainConfig.replay_passes: every text in every epoch, each replay example in about `replay_passes` of them
    (a share per epoch, so an epoch costs the texts plus a share instead of the texts plus every replay example);
    a real run trains on both and says how many replay examples it had."""
    from kadapt.training import ChatExample, schedule

    texts = [[index] * 4 for index in range(5)]
    replay = [[100 + index] * 6 for index in range(12)]
    config = TrainConfig(epochs=6, row_tokens=32, rows_per_step=1, replay_passes=2)
    plan = schedule(texts, replay, config)
    seen = [[piece[0] for row in rows for piece in row] for rows in plan.epochs]
    assert len(seen) == 6
    assert all(sorted(token for token in epoch if token < 100) == list(range(5)) for epoch in seen)
    counts = {index: sum(epoch.count(100 + index) for epoch in seen) for index in range(12)}
    assert set(counts.values()) == {2}  # 12 x 2 passes / 6 epochs: a share of 4 a epoch, each twice in all
    assert len({tuple(sorted(epoch)) for epoch in seen}) > 1  # the share moves
    tokens = [sum(len(piece) for row in rows for piece in row) for rows in plan.epochs]
    assert tokens == [5 * 4 + 4 * 6] * 6  # not 5 x 4 + 12 x 6
    assert plan.locate(sum(plan.epoch_steps[:3]) + 1) == (3, 1)

    # passes at least the epochs: every replay example every epoch, packed once
    every = schedule(texts, replay, TrainConfig(epochs=3, row_tokens=32, replay_passes=3))
    assert all(sum(len(piece) for row in rows for piece in row) == 5 * 4 + 12 * 6 for rows in every.epochs)

    system = "You are the assistant for zoo."
    answers = [ChatExample(system, f"Name {n} colours.", "Red, green and blue are colours.") for n in range(2, 8)]
    run = TrainConfig(**(CONFIG | {"epochs": 3, "replay_passes": 1}))
    facts = [fact.text for fact in FACTS[:3]]
    result = train_lora(base_model, facts, tmp_path / "replayed", run, work_dir=tmp_path / "work", replay=answers)
    assert (result.examples, result.replay_examples) == (3, 6)
    alone = train_lora(base_model, facts, tmp_path / "alone", run, work_dir=tmp_path / "work-alone")
    assert result.tokens > alone.tokens  # each epoch had its share of the replay examples
    assert result.steps > alone.steps
    # early stopping waits for the texts' loss: the replay examples' is in the loss, not in the texts' loss
    assert len(result.text_loss_curve) == len(result.loss_curve) == result.steps
    assert any(text != loss for text, loss in zip(result.text_loss_curve, result.loss_curve, strict=True))
    assert alone.text_loss_curve == alone.loss_curve


def test_refresh_examples_get_their_passes_in_a_moving_window_beside_every_epochs_examples():
    """A spread warm start: its changed examples once an epoch (each pass its own epoch, so its own optimizer
    step), its unchanged ones refreshed about ``refresh_passes`` times, the replay windows as without them."""
    from kadapt.training import schedule, training_data_hash

    changed = [[index] * 4 for index in range(3)]
    unchanged = [[50 + index] * 5 for index in range(10)]
    replay = [[100 + index] * 6 for index in range(5)]
    config = TrainConfig(epochs=10, row_tokens=32, rows_per_step=8, replay_passes=2)
    plan = schedule(changed, replay, config, unchanged, refresh_passes=5)
    seen = [[piece[0] for row in rows for piece in row] for rows in plan.epochs]
    assert all(sorted(token for token in epoch if token < 50) == [0, 1, 2] for epoch in seen)
    counts = {index: sum(epoch.count(50 + index) for epoch in seen) for index in range(10)}
    assert set(counts.values()) == {5}  # 10 x 5 passes / 10 epochs: a share of 5 an epoch
    assert {index: sum(epoch.count(100 + index) for epoch in seen) for index in range(5)} == dict.fromkeys(range(5), 2)
    # without refresh examples the schedule is the one it always was
    plain = schedule(changed + unchanged, replay, config)
    again = schedule(changed + unchanged, replay, config, (), refresh_passes=5)
    assert plain.epochs == again.epochs
    # a checkpoint is resumed only for the same refresh examples and passes
    texts = ["a", "b"]
    hashes = {training_data_hash(texts, config), training_data_hash(texts, config, None, (), ["c"], 5)}
    hashes |= {training_data_hash(texts, config, None, (), ["c"], 4), training_data_hash(texts, config, None, ["c"])}
    assert len(hashes) == 4
