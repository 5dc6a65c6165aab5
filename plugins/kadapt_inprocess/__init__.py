"""The default job runner: jobs run in this process, inline (CLI) or on a background thread (server)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import ClassVar

from kadapt.contracts import JobContext, hookimpl, run_job

__all__ = ["InProcessRunner"]


class InProcessRunner:
    name = "inprocess"
    description = "Runs jobs in the calling process: inline when waited for, else on a daemon thread."

    # the job threads still running, by job id: shared by every instance (a fresh plugin manager makes a new
    # one), so that whoever shuts down can wait for all of them
    threads: ClassVar[dict[str, threading.Thread]] = {}

    def submit(
        self, catalog, job_id: str, *, wait: bool = True, listeners: list[Callable[[JobContext], None]] | None = None
    ) -> None:
        if wait:
            run_job(catalog, job_id, listeners)
            return
        for done in [job for job, thread in self.threads.items() if not thread.is_alive()]:
            self.threads.pop(done, None)
        thread = threading.Thread(
            target=run_job, args=(catalog, job_id, listeners), name=f"kadapt-job-{job_id[:8]}", daemon=True
        )
        self.threads[job_id] = thread
        thread.start()


@hookimpl
def register_job_runners(register):
    register(InProcessRunner())
