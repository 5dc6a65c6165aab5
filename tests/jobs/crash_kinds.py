"""Job kinds that exist only in the tests, loaded as a plugin (``KADAPT_PLUGINS``) so that Ray workers,
which load kadapt's plugins before running a job, know them too."""

from __future__ import annotations

import os

from kadapt.jobs import job_function


class Escape(BaseException):
    """Not an ``Exception``: it passes through run_job's own error handling, as a bug in a runner would."""


@job_function("test-crash")
def _crash(context, how: str) -> dict:
    context.progress(done=1, total=2, message="about to stop")
    context.flush()
    if how == "exit":
        os._exit(3)  # the worker process dies, as when it is killed or runs out of memory
    raise Escape("escaped the job's error handling")
