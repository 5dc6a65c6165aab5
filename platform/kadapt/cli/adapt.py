"""``kadapt augment`` and ``kadapt train``: teaching a KB to the model (its adapters: ``kadapt adapters``)."""

from __future__ import annotations

from typing import Annotated

import typer

from kadapt.cli import _context
from kadapt.cli._output import JsonOption, console, err_console, job_progress, print_json
from kadapt.errors import KadaptError
from kadapt.training import TrainConfig


def register(app: typer.Typer) -> None:
    app.command("augment")(augment)
    app.command("train")(train)


def _finish(job_id: str, json_output: bool) -> dict:
    from kadapt.jobs import get_job, outcome_message

    job = get_job(_context.catalog(), job_id)
    if json_output:
        print_json({"job": job.id, "state": job.state, "error": job.error} | (job.result or {}))
    if job.state != "succeeded":
        raise KadaptError(outcome_message(job))
    return job.result or {}


def augment(
    kb: Annotated[str, typer.Argument(help="The KB to augment.")],
    augmenter: Annotated[
        list[str] | None,
        typer.Option(
            "--augmenter",
            "-a",
            help="Augmenter to run (repeatable); default all: sentence-split, reverse, local, global, chain.",
        ),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Write augmentations (sentence splits, rephrasings, reversals, inferences) for the KB's documents.

    Documents already augmented at their current content are skipped, so an interrupted run resumes."""
    from kadapt.jobs import submit
    from kadapt.kbs import get_kb

    catalog = _context.catalog()
    kb_row = get_kb(catalog, kb)
    with job_progress(f"augment {kb}", quiet=json_output) as listeners:
        job_id = submit(
            catalog, "augment", kb_id=kb_row.id, params={"kb": kb, "augmenters": augmenter}, listeners=listeners
        )
    result = _finish(job_id, json_output)
    if not json_output:
        for name, counts in result["by_augmenter"].items():
            console.print(
                f"{name}: {counts['added']} added, {counts['duplicates']} dropped or duplicate, "
                f"{counts['documents']} documents, {counts['generated_tokens']} tokens generated"
            )
        console.print(f"{result['skipped']} (augmenter, document) pairs were already done.")


def train(
    kb: Annotated[str, typer.Argument(help="The KB to train an adapter for.")],
    mode: Annotated[str, typer.Option(help="ft (documents) or aug-ft (documents + augmentations).")] = "ft",
    epochs: Annotated[int, typer.Option(help=TrainConfig.help("epochs"))] = TrainConfig.epochs,
    learning_rate: Annotated[
        float, typer.Option("--lr", help=TrainConfig.help("learning_rate"))
    ] = TrainConfig.learning_rate,
    rank: Annotated[int, typer.Option(help=TrainConfig.help("rank"))] = TrainConfig.rank,
    row_tokens: Annotated[int, typer.Option(help=TrainConfig.help("row_tokens"))] = TrainConfig.row_tokens,
    rows_per_step: Annotated[int, typer.Option(help=TrainConfig.help("rows_per_step"))] = TrainConfig.rows_per_step,
    checkpoint_every: Annotated[
        int, typer.Option(help=TrainConfig.help("checkpoint_every"))
    ] = TrainConfig.checkpoint_every,
    seed: Annotated[int, typer.Option(help=TrainConfig.help("seed"))] = TrainConfig.seed,
    early_stop_loss: Annotated[
        float, typer.Option(min=0, max=99, help=TrainConfig.help("early_stop_loss"))
    ] = TrainConfig.early_stop_loss,
    replay_passes: Annotated[
        int, typer.Option(min=1, help=TrainConfig.help("replay_passes"))
    ] = TrainConfig.replay_passes,
    activate: Annotated[bool, typer.Option(help="Serve the KB from the new adapter once it is ready.")] = False,
    warm_start: Annotated[
        bool,
        typer.Option(
            help="Continue the KB's current adapter of this mode on the documents changed since its snapshot (the "
            "unchanged ones refreshed for KADAPT_WARM_START_EPOCHS) instead of training from scratch; falls back to a "
            "full training, saying "
            "why, when documents were removed or after KADAPT_WARM_START_MAX warm starts."
        ),
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Train a LoRA adapter on the KB's current snapshot (resumes an interrupted run of the same mode)."""
    import kadapt.adapters as adapters_module
    from kadapt.jobs import get_job, run_job, submit
    from kadapt.kbs import get_kb

    catalog = _context.catalog()
    kb_row = get_kb(catalog, kb)
    interrupted = adapters_module.interrupted_training(catalog, kb_row.id, mode)
    with job_progress(f"train {kb} ({mode})", quiet=json_output) as listeners:
        if interrupted is not None:
            err_console.print(f"resuming interrupted training job {interrupted.id}")
            run_job(catalog, interrupted.id, listeners)
            job_id = interrupted.id
        else:
            config = {"epochs": epochs, "learning_rate": learning_rate, "rank": rank, "alpha": 2 * rank}
            config |= {"row_tokens": row_tokens, "rows_per_step": rows_per_step, "checkpoint_every": checkpoint_every}
            config |= {"early_stop_loss": early_stop_loss, "replay_passes": replay_passes}
            params = {"kb": kb, "mode": mode, "adapter_id": adapters_module.new_adapter_id(), "config": config}
            params |= {"activate": activate, "warm_start": warm_start}
            config["seed"] = seed
            job_id = submit(catalog, "train", kb_id=kb_row.id, params=params, listeners=listeners)
    result = _finish(job_id, json_output)
    if not json_output:
        _print_trained(result, get_job(catalog, job_id).params, kb, mode)


def _print_trained(result: dict, params: dict, kb: str, mode: str) -> None:
    """Tell where the new adapter is, how its training went, and how to serve it unless the job activates it."""
    console.print(
        f"adapter [bold]{result['adapter']}[/bold] ready: {result['examples']} examples"
        + (f" and {result['replay']} replayed answers" if result.get("replay") else "")
        + ", "
        f"{result['steps']} steps in {result['seconds']} s, final loss {result['final_loss']:.3f}"
        + (f", resumed from step {result['resumed_from_step']}" if result["resumed_from_step"] else "")
    )
    if result.get("warm_start"):
        warm = result["warm_start"]
        console.print(
            f"  warm start from adapter {warm['parent']}: {warm['changed']} changed document(s), "
            f"{warm['replayed']} replayed"
        )
    elif result.get("full_training_because"):
        console.print(f"  full training: {result['full_training_because']}")
    console.print(
        f"  {result['path']}" + ("" if params.get("activate") else f"\n  serve it with: kadapt kb set-mode {kb} {mode}")
    )
