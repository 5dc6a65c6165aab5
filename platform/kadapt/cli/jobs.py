"""``kadapt jobs``: list, show, cancel and resume jobs."""

from __future__ import annotations

from typing import Annotated

import typer

from kadapt.cli import _context
from kadapt.cli._output import JsonOption, console, job_progress, print_json, print_table
from kadapt.views import JobView

app = typer.Typer(help="List, show, cancel and resume jobs (sync, augment, train, ...).")


@app.callback(invoke_without_command=True)
def list_(
    ctx: typer.Context,
    kb: Annotated[str | None, typer.Option(help="Only jobs of this KB.")] = None,
    limit: Annotated[int, typer.Option(help="How many recent jobs.")] = 20,
    json_output: JsonOption = False,
) -> None:
    """List recent jobs."""
    if ctx.invoked_subcommand is not None:
        return
    from sqlalchemy import select

    from kadapt.catalog import Job
    from kadapt.kbs import get_kb

    catalog = _context.catalog()
    query = select(Job).order_by(Job.created_at.desc()).limit(limit)
    if kb:
        query = query.where(Job.kb_id == get_kb(catalog, kb).id)
    with catalog.session() as session:
        jobs = list(session.scalars(query))
    if json_output:
        print_json([JobView.of(job).json_data() for job in jobs])
        return
    print_table(
        None,
        ["id", "kind", "state", "progress", "message", "created"],
        [
            (
                job.id,
                job.kind,
                job.state,
                f"{job.progress_done}/{job.progress_total or '?'}",
                job.message,
                job.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            )
            for job in jobs
        ],
    )


@app.command("show")
def show(job_id: Annotated[str, typer.Argument(help="Job id.")], json_output: JsonOption = False) -> None:
    """Show one job with its log."""
    from kadapt.jobs import get_job

    job = get_job(_context.catalog(), job_id)
    if json_output:
        print_json(JobView.of(job, log=job.log).json_data())
        return
    for key, value in JobView.of(job).json_data().items():
        if key == "log":
            continue
        console.print(f"[bold]{key}[/bold]: {value}", highlight=False)
    console.print("[bold]log[/bold]:\n" + (job.log or ""), highlight=False)


@app.command("cancel")
def cancel(job_id: Annotated[str, typer.Argument(help="Job id.")]) -> None:
    """Cancel a queued or running job (a running job stops at its next progress report)."""
    from kadapt.jobs import cancel_job

    job = cancel_job(_context.catalog(), job_id)
    console.print(f"job {job.id}: {'cancel requested' if job.cancel_requested else job.state}")


@app.command("resume")
def resume(job_id: Annotated[str, typer.Argument(help="Job id of an interrupted job.")]) -> None:
    """Run an interrupted job again in this process; jobs are idempotent, so finished work is skipped."""
    from kadapt.jobs import get_job, run_job

    catalog = _context.catalog()
    job = get_job(catalog, job_id)
    with job_progress(f"{job.kind} (resumed)") as listeners:
        job = run_job(catalog, job_id, listeners)
    console.print(f"job {job.id}: {job.state}" + (f" ({job.error})" if job.error else ""))
