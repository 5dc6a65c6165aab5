"""Top-level commands: sync, search, status, plugins, config."""

from __future__ import annotations

from typing import Annotated

import typer

from kadapt.cli import _context
from kadapt.cli._output import JsonOption, console, err_console, job_progress, print_json, print_table
from kadapt.errors import KadaptError


def register(app: typer.Typer) -> None:
    app.command("sync")(sync)
    app.command("search")(search)
    app.command("status")(status)
    app.command("plugins")(plugins)
    app.command("config")(config)
    schedule_app = typer.Typer(help="Scheduled syncs: the sources' cron schedules.", no_args_is_help=True)
    schedule_app.command("run")(schedule_run)
    app.add_typer(schedule_app, name="schedule")


def schedule_run(json_output: JsonOption = False) -> None:
    """Start the syncs that are due now, once (for a system cron when KADAPT_SCHEDULER is off; `kadapt serve`
    runs them itself), each to its end. A KB that is busy keeps its sources due for the next run."""
    from kadapt.scheduler import run_due

    done = run_due(_context.catalog(), wait=True)
    if json_output:
        print_json([item.__dict__ for item in done])
        return
    if not done:
        console.print("No scheduled sync is due.")
    for item in done:
        sources = ", ".join(str(source) for source in item.sources)
        if item.job_id:
            console.print(
                f"{item.kb}: sync job {item.job_id} ran (sources {sources}); see `kadapt jobs show {item.job_id}`"
            )
        else:
            console.print(f"{item.kb}: not started, due again next run: {item.deferred}")


def sync(
    kb: Annotated[str, typer.Argument(help="The KB whose sources to sync.")],
    json_output: JsonOption = False,
) -> None:
    """Sync a KB's sources: read new and changed documents, drop deleted ones, embed only what changed."""
    from kadapt.jobs import get_job, outcome_message, submit
    from kadapt.kbs import get_kb

    catalog = _context.catalog()
    kb_row = get_kb(catalog, kb)
    with job_progress(f"sync {kb}", quiet=json_output) as listeners:
        job_id = submit(catalog, "sync", kb_id=kb_row.id, params={"kb": kb}, listeners=listeners)
    job = get_job(catalog, job_id)
    result = job.result or {}
    if json_output:
        print_json({"job": job.id, "state": job.state, "error": job.error} | result)
    else:
        console.print(
            f"[bold]{job.state}[/bold]: {result.get('listed', 0)} listed, {result.get('added', 0)} added, "
            f"{result.get('updated', 0)} updated, {result.get('deleted', 0)} deleted, "
            f"{result.get('skipped_unread', 0) + result.get('unchanged', 0)} unchanged, "
            f"{result.get('failed', 0)} errors; {result.get('chunks_embedded', 0)} chunks embedded; "
            + (f"new snapshot {result['snapshot']}" if result.get("snapshot_created") else "no new snapshot")
        )
        if result.get("failed"):
            err_console.print(f"{result['failed']} document(s) could not be read: see `kadapt status {kb}`")
    if job.state != "succeeded":
        raise KadaptError(outcome_message(job))


def search(
    kb: Annotated[str, typer.Argument(help="The KB to search.")],
    query: Annotated[str, typer.Argument(help="What to look for.")],
    k: Annotated[int, typer.Option("-k", "--top", min=1, max=100, help="How many chunks to return.")] = 5,
    json_output: JsonOption = False,
) -> None:
    """Semantic search over a KB's chunks; prints each chunk with its document locator and score."""
    from kadapt.kbs import get_kb

    hits = _context.store().search(get_kb(_context.catalog(), kb), query, k)
    if json_output:
        print_json([hit.__dict__ for hit in hits])
        return
    if not hits:
        console.print(f"No results; is the KB synced? Try: kadapt sync {kb}")
        return
    for rank, hit in enumerate(hits, 1):
        snippet = " ".join(hit.text.split())
        snippet = snippet[:300] + ("…" if len(snippet) > 300 else "")
        console.print(f"[bold]{rank}. {hit.locator}[/bold]  score {hit.score:.3f}  [dim]{hit.title}[/dim]")
        console.print(f"   {snippet}", highlight=False)


def status(
    kb: Annotated[str | None, typer.Argument(help="One KB; all when omitted.")] = None,
    json_output: JsonOption = False,
) -> None:
    """Health, documents, chunks, snapshot and document errors of a KB (or a summary of every KB)."""
    from kadapt.kbs import kb_status, list_kbs

    catalog = _context.catalog()
    store = _context.store()
    slugs = [kb] if kb else [item.slug for item in list_kbs(catalog)]
    statuses = [kb_status(catalog, store, slug) for slug in slugs]
    if json_output:
        print_json(statuses[0] if kb else statuses)
        return
    if not statuses:
        console.print("No KBs yet. Create one with: kadapt kb create NAME")
        return
    print_table(
        None,
        [
            "KB",
            "health",
            "mode",
            "decision",
            "sources",
            "documents",
            "chunks",
            "snapshot",
            "errors",
            "last sync",
            "next sync",
            "from the prompt",
        ],
        [
            (
                s["kb"],
                s["health"]["label"],
                s["active_mode"],
                f"{s['decision']['mode']} ({s['decision']['policy']})" if s["decision"] else "none",
                s["sources"],
                s["documents"],
                s["chunks"],
                s["snapshot"]["hash"][:12] if s["snapshot"] else "none",
                len(s["errors"]),
                s["last_sync"]["state"] if s["last_sync"] else "never",
                s["next_sync"][:16].replace("T", " ") if s["next_sync"] else "-",
                _freshness(s["freshness"]),
            )
            for s in statuses
        ],
    )
    for item in statuses:
        if item["errors"] and kb:
            print_table(
                f"document errors in {item['kb']}",
                ["source", "document", "error"],
                [(e["source_id"], e["locator"], e["message"]) for e in item["errors"]],
            )
        elif item["errors"]:
            console.print(f"{item['kb']}: {len(item['errors'])} document error(s); see `kadapt status {item['kb']}`")


def _freshness(fresh: dict | None) -> str:
    """What a KB served from an adapter answers from the prompt until its next retrain."""
    if not fresh:
        return "-"
    pending = fresh["added"] + fresh["changed"]
    text = f"{pending} doc(s)" + (f", {fresh['removed']} withdrawn" if fresh["removed"] else "")
    return text + (" (stale)" if fresh.get("stale") else "") if pending or fresh["removed"] else "none"


def plugins(json_output: JsonOption = False) -> None:
    """List plugins, what each registers, and whether it loaded."""
    from kadapt.plugins import get_plugins

    infos = get_plugins().describe()
    if json_output:
        print_json([info.__dict__ for info in infos])
        return
    rows = []
    for info in infos:
        registers = "; ".join(
            f"{hook.removeprefix('register_')}: {', '.join(names)}" for hook, names in info.registers.items()
        )
        state = "enabled" if info.enabled else f"[red]disabled[/red]: {info.reason}"
        rows.append((info.name, info.module, info.source, state, registers))
    print_table(None, ["plugin", "module", "from", "status", "registers"], rows)


def config(json_output: JsonOption = False) -> None:
    """Print the effective settings (secrets masked)."""
    data = _context.settings().public_dict()
    if json_output:
        print_json(data)
        return
    print_table(
        None, ["setting", "env var", "value"], [(name, f"KADAPT_{name.upper()}", value) for name, value in data.items()]
    )
