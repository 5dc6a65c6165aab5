"""``kadapt audit``: read the audit log; and the recording of the CLI's own state-changing commands in it.

Every command in :data:`CLI_ACTIONS` is recorded when it ends (actor ``cli:<os user>``, outcome ``ok`` or
``failed`` with the error), whatever it did; a test fails when a new command is in neither that table nor
:data:`NOT_AUDITED`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Annotated, Any

import click
import typer

from kadapt.cli import _context
from kadapt.cli._output import JsonOption, err_console, print_json, print_table
from kadapt.errors import InvalidInput, KadaptError, PermissionDenied

__all__ = ["CLI_ACTIONS", "NOT_AUDITED", "audit_commands", "register"]

# command path -> action (the same names as the API's and the console's, kadapt.audit)
CLI_ACTIONS = {
    "kb create": "kb.create",
    "kb delete": "kb.delete",
    "kb set-mode": "kb.set-mode",
    "kb set-workload": "kb.workload",
    "kb import": "kb.import",
    "source add": "source.add",
    "source edit": "source.edit",
    "source remove": "source.remove",
    "schedule run": "schedule.run",
    "sync": "kb.sync",
    "augment": "kb.augment",
    "train": "kb.train",
    "decide": "kb.evaluate",
    "adapt": "kb.adapt",
    "probes generate": "probes.generate",
    "probes import": "probes.import",
    "probes answer": "probes.answer",
    "jobs cancel": "job.cancel",
    "jobs resume": "job.resume",
    "keys create": "key.create",
    "keys revoke": "key.revoke",
    "adapters export": "adapters.export",
    "bench generalization": "bench.generalization",
}
# commands that change nothing kadapt keeps (reading, chatting, serving, writing a report file)
NOT_AUDITED = {
    "search",
    "status",
    "plugins",
    "config",
    "serve",
    "chat",
    "report",
    "audit",
    "kb list",
    "kb show",
    "source list",
    "source kinds",
    "jobs show",
    "keys list",
    "adapters list",
    "adapters forgetting",  # asks general questions; stores nothing
    "probes list",
}
_TARGETS = {"source_id": "source", "job_id": "job", "key_id": "key"}
_DETAILS = ("kind", "mode", "adapter", "role", "groups", "name", "policy")  # parameters that are never secret


def register(app: typer.Typer) -> None:
    app.command("audit")(audit)


def audit(
    kb: Annotated[str | None, typer.Option(help="Only events on this KB.")] = None,
    actor: Annotated[
        str | None, typer.Option(help="Only events by this actor ('key:3', 'cli:alice') or key name.")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Only events at or after this time, ISO 8601 (e.g. 2026-11-26T09:00Z).")
    ] = None,
    before: Annotated[int | None, typer.Option(min=1, help="Only events older than this event id (next page).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many events to show.")] = 50,
    json_output: JsonOption = False,
) -> None:
    """Show the audit log: admin and editor actions from the API, the console and the CLI, newest first."""
    from kadapt.audit import list_events
    from kadapt.views import AuditEventView, AuditPage

    started = _since(since) if since else None
    events, has_more = list_events(_context.catalog(), kb=kb, actor=actor, since=started, before=before, limit=limit)
    page = AuditPage(
        data=[AuditEventView.of(event) for event in events],
        has_more=has_more,
        next_before=events[-1].id if has_more else None,
    ).json_data()
    rows = page["data"]
    if json_output:
        print_json(page)
        return
    print_table(
        None,
        ["id", "at", "actor", "via", "client", "action", "kb", "target", "outcome", "detail"],
        [
            (
                row["id"],
                row["at"][:19].replace("T", " "),
                f"{row['actor']} ({row['actor_name']})" if row["actor_name"] else row["actor"],
                row["via"],
                row["client"],
                row["action"],
                row["kb"],
                row["target"],
                row["outcome"] + (f" {row['status']}" if row["status"] else ""),
                row["detail"],
            )
            for row in rows
        ],
    )
    if has_more:
        err_console.print(f"older events: kadapt audit --before {page['next_before']}")


def _since(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            f"--since {text!r} is not an ISO 8601 time; e.g. 2026-11-26 or 2026-11-26T09:00:00Z"
        ) from None


def _commands(command: click.Command, path: str = "") -> Iterator[tuple[str, click.Command]]:
    subcommands = getattr(command, "commands", None)
    if subcommands is None:
        yield path, command
        return
    for name, subcommand in subcommands.items():
        yield from _commands(subcommand, f"{path} {name}".strip())


def audit_commands(root: click.Command) -> None:
    """Record each command of :data:`CLI_ACTIONS` under ``root`` in the audit log when it ends."""
    for path, command in _commands(root):
        action = CLI_ACTIONS.get(path)
        if action is not None and command.callback is not None:
            command.callback = _audited(command.callback, action)


def _audited(callback: Callable[..., Any], action: str) -> Callable[..., Any]:
    @functools.wraps(callback)
    def run(**params: Any) -> Any:
        try:
            result = callback(**params)
        except PermissionDenied as exc:
            _record(action, params, "denied", exc.message)
            raise
        except KadaptError as exc:
            _record(action, params, "failed", exc.message)
            raise
        except (typer.Exit, click.exceptions.Exit) as exc:
            code = getattr(exc, "exit_code", 0)
            _record(action, params, "ok" if code == 0 else "failed", "" if code == 0 else f"exit code {code}")
            raise
        except (click.exceptions.Abort, KeyboardInterrupt):
            _record(action, params, "failed", "aborted")
            raise
        except Exception as exc:
            _record(action, params, "failed", f"{type(exc).__name__}: {exc}")
            raise
        _record(action, params, "ok", "")
        return result

    return run


def _record(action: str, params: dict[str, Any], outcome: str, error: str) -> None:
    from kadapt.audit import cli_actor, record

    kb = params.get("slug") or params.get("kb")
    target = next((f"{_TARGETS[name]} {params[name]}" for name in _TARGETS if params.get(name) is not None), "")
    details = ", ".join(f"{name} {params[name]}" for name in _DETAILS if params.get(name) not in (None, ""))
    try:
        record(
            _context.catalog(),
            actor=cli_actor(),
            action=action,
            outcome=outcome,
            via="cli",
            client="local",
            kb=kb if isinstance(kb, str) else None,
            target=target,
            detail=error or details,
        )
    except Exception as exc:  # the command's own result matters more than its audit line
        err_console.print(f"[yellow]warning:[/yellow] could not record {action} in the audit log: {exc}")
