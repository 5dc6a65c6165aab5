"""Shared CLI output: rich tables for people, ``--json`` for scripts, progress bars for jobs."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["JsonOption", "console", "count_progress", "err_console", "job_progress", "print_json", "print_table"]

console = Console()
err_console = Console(stderr=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")]


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=_default))


def print_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    table = Table(title=title, header_style="bold")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    console.print(table)


@contextmanager
def count_progress(description: str, *, quiet: bool = False) -> Iterator[Callable[..., None]]:
    """A rich progress bar; yields ``update(done, total, message="")``."""
    if quiet:
        yield lambda done, total, message="": None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[message]}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    ) as progress:
        task = progress.add_task(description, total=None, message="")
        reported = False

        def update(done: int, total: int | None, message: str = "") -> None:
            nonlocal reported
            reported = True
            progress.update(task, completed=done, total=total, message=message)

        try:
            yield update
        except BaseException:
            if not reported:  # refused before it started (a limit, a bad argument): the error line stands alone
                progress.live.transient = True
            raise


@contextmanager
def job_progress(description: str, *, quiet: bool = False) -> Iterator[list]:
    """A rich progress bar fed by job progress; yields the listener list to pass to ``submit``."""
    if quiet:
        yield []
        return
    with count_progress(description) as update:
        yield [lambda context: update(context.done, context.total, context.message)]
