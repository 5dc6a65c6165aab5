"""Sync schedules: cron expressions (read by croniter), checked before they are stored.

What runs them is :mod:`kadapt.scheduler`.
"""

from __future__ import annotations

from datetime import datetime

from kadapt.errors import InvalidInput

__all__ = ["check_schedule", "next_sync"]


def check_schedule(expression: str | None) -> str | None:
    """``expression`` as stored: a cron expression of five fields (minute hour day month weekday) or an alias
    such as ``@daily``, with its spaces normalised; None (or blank) for no schedule. InvalidInput names what is
    wrong with anything else (a seconds field is refused: a sync every second is not a schedule)."""
    from croniter import croniter

    if expression is None or not expression.strip():
        return None
    normal = " ".join(expression.split())
    if len(normal) > 100:
        raise InvalidInput("schedule: a cron expression is at most 100 characters")
    fields = normal.split(" ")
    if not normal.startswith("@") and len(fields) != 5:
        raise InvalidInput(
            f"schedule {normal!r}: expected a cron expression of 5 fields (minute hour day month weekday, e.g. "
            f"'0 3 * * *' for 03:00 every day) or an alias such as '@daily'; got {len(fields)} fields"
        )
    if not croniter.is_valid(normal):
        raise InvalidInput(
            f"schedule {normal!r} is not a valid cron expression (e.g. '*/30 * * * *' every 30 minutes, "
            "'0 3 * * 1-5' at 03:00 on weekdays, '@hourly')"
        )
    try:
        next_sync(normal, datetime.now().astimezone())
    except Exception as exc:  # croniter's CroniterBadDateError: the expression names no real date
        raise InvalidInput(f"schedule {normal!r} never comes round (e.g. the 31st of February)") from exc
    return normal


def next_sync(expression: str, after: datetime) -> datetime:
    """The schedule's first moment strictly after ``after`` (UTC)."""
    from croniter import croniter

    return croniter(expression, after).get_next(datetime)
