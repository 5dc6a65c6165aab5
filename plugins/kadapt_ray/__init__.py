"""The Ray job runner (``KADAPT_JOB_RUNNER=ray``): each job runs as a Ray task on a cluster.

The job's state, progress and log stay in the catalog, as with the in-process runner: the task opens
the catalog itself and runs :func:`kadapt.jobs.run_job`, so ``kadapt jobs``, the API and the web pages
show a Ray job like any other. ``KADAPT_RAY_ADDRESS`` picks the cluster: unset starts a local Ray
instance on first use, ``auto`` joins the cluster this machine belongs to, ``ray://host:10001`` connects
through Ray Client.

A task runs with the submitter's kadapt settings: its ``KADAPT_*`` environment goes along as the task's
``runtime_env`` (Ray starts separate worker processes per distinct environment), with the data dir, the
catalog URL and the allowed roots made absolute. So every node must reach what those settings name:
with a SQLite catalog and embedded Chroma (the defaults) that means one machine; across machines use a
PostgreSQL catalog (``KADAPT_CATALOG_URL``), a Chroma server (``KADAPT_CHROMA_URL``) and a data dir
(``KADAPT_DATA_DIR``, where models and adapters live) mounted at the same path on every node. A task
that finds no SQLite catalog file on its node fails the job with that advice instead of creating an
empty catalog there. The settings are part of the task's runtime_env, which Ray keeps and shows (its
dashboard and state API), catalog password and ``KADAPT_OPENAI_API_KEY`` included (``KADAPT_SECRET_KEY``
stays behind): keep the cluster private.

Resources: a task reserves ``KADAPT_TORCH_THREADS`` CPUs (one when unset) and runs that many torch
threads; training, evaluation and adapt jobs also take a GPU when the cluster has any.

A job that submits further jobs runs them inline, inside its own task (the task's runner is
``inprocess``). A task that dies without finishing its job (its worker killed, its node lost, out of
memory) leaves the job ``interrupted``, resumable with ``kadapt jobs resume``; an error outside the job's
own error handling leaves it ``failed``. Ray does not retry a job's task by itself.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kadapt.contracts import TERMINAL_STATES, JobContext, hookimpl
from kadapt.errors import ConfigError

__all__ = ["JobProgress", "RayRunner", "stop_job"]

POLL_SECONDS = 0.5
# job kinds that train adapters (evaluate trains the pilot's): they ask for a GPU when the cluster has one
GPU_KINDS = frozenset({"train", "evaluate", "adapt"})
# settings a job never needs, kept out of the task's environment (Ray shows a task's runtime_env)
NOT_FORWARDED = frozenset({"KADAPT_SECRET_KEY"})
LOCAL_OBJECT_STORE_BYTES = 128 * 1024 * 1024  # tasks pass job ids, not data: the minimum is 75 MiB
INSTALL_HINT = "pip install 'kadapt[ray]'"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class JobProgress:
    """What a listener of a Ray job sees, read from the job's row (the job's own context lives in the task)."""

    job_id: str
    done: int = 0
    total: int | None = None
    message: str = ""


def _import_ray():
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(
            f"KADAPT_JOB_RUNNER=ray needs Ray, which is not installed; install it with: {INSTALL_HINT}"
        ) from exc
    return ray


def task_environment(catalog, cpus: int) -> dict[str, str]:
    """The ``KADAPT_*`` environment a job's task runs with: the submitter's, with paths made absolute and
    as many torch threads as the task has CPUs."""
    from kadapt.contracts import get_settings

    settings = get_settings()
    environment = {
        name: value for name, value in os.environ.items() if name.startswith("KADAPT_") and name not in NOT_FORWARDED
    }
    environment |= {
        "KADAPT_DATA_DIR": str(settings.data_dir),
        "KADAPT_MODELS_DIR": str(settings.effective_models_dir),
        "KADAPT_CATALOG_URL": catalog.url,  # the catalog the submitter watches, whatever the settings say
        "KADAPT_ALLOWED_ROOTS": json.dumps([str(root) for root in settings.effective_allowed_roots]),
        "KADAPT_JOB_RUNNER": "inprocess",  # jobs submitted by a job run inline in its task
        "KADAPT_TORCH_THREADS": str(cpus),
    }
    return environment


def run_in_task(job_id: str, environment: dict[str, str], owner: str | None = None) -> str:
    """The body of a job's Ray task: adopt the submitter's settings, run the job, return its final state."""
    import ray

    from kadapt.contracts import get_plugins, get_settings, open_catalog, run_job

    # a local Ray instance's workers inherit the environment of the process that started it; settings
    # the submitter does not have must not leak in from there
    stale = [name for name in os.environ if name.startswith("KADAPT_") and name not in environment]
    changed = [name for name, value in environment.items() if os.environ.get(name) != value]
    for name in stale:
        del os.environ[name]
    os.environ.update(environment)
    if stale or changed:
        get_settings.cache_clear()
        get_plugins.cache_clear()
    settings = get_settings()
    if settings.effective_catalog_url.startswith("sqlite:///"):
        path = settings.effective_catalog_url.removeprefix("sqlite:///")
        if not os.path.exists(path):  # opening it would create an empty catalog on this node
            raise ConfigError(
                f"the SQLite catalog {path} is not on this Ray node; a Ray cluster of several machines needs a "
                "catalog every node reaches: set KADAPT_CATALOG_URL to a PostgreSQL URL"
            )
    get_plugins()  # plugins may declare job kinds of their own
    catalog = open_catalog(settings)
    ray_context = ray.get_runtime_context()
    _add_log_line(
        catalog,
        job_id,
        f"Ray task {ray_context.get_task_id()} on {socket.gethostname()} "
        f"(node {ray_context.get_node_id()[:12]}, pid {os.getpid()})",
    )
    return run_job(catalog, job_id, owner=owner).state


class RayRunner:
    name = "ray"
    description = "Runs each job as a Ray task on the cluster of KADAPT_RAY_ADDRESS (unset: a local Ray instance)."

    def __init__(self) -> None:
        self._connect_lock = threading.Lock()
        self._remote = None
        self.watchers: dict[str, threading.Thread] = {}  # jobs not waited for: job id -> thread holding the task

    def connect(self):
        """Connect this process to Ray once (starting a local instance when no address is set); return ``ray``."""
        import logging

        from kadapt.contracts import get_settings

        ray = _import_ray()
        with self._connect_lock:
            if not ray.is_initialized():
                address = get_settings().ray_address
                quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
                try:
                    if address:
                        ray.init(address=address, **quiet)
                    else:  # "local": a new instance even when RAY_ADDRESS or a running cluster is around
                        ray.init(
                            address="local",
                            include_dashboard=False,
                            object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                            **quiet,
                        )
                except ConnectionError as exc:
                    raise ConfigError(
                        f"cannot reach the Ray cluster at KADAPT_RAY_ADDRESS={address!r}: {exc}; start it with "
                        "`ray start --head` or unset KADAPT_RAY_ADDRESS to run a local Ray instance"
                    ) from exc
            if self._remote is None:
                self._remote = ray.remote(run_in_task)
        return ray

    def submit(
        self, catalog, job_id: str, *, wait: bool = True, listeners: list[Callable[[JobContext], None]] | None = None
    ) -> None:
        from kadapt.contracts import get_job, get_settings

        ray = self.connect()
        kind = get_job(catalog, job_id).kind
        # a task reserves the CPUs its torch threads use (KADAPT_TORCH_THREADS, else one); Ray sets the
        # task's OMP_NUM_THREADS to match, which training follows
        settings = get_settings()
        cpus = settings.torch_threads or 1
        resources = ray.cluster_resources()
        if settings.ray_address is None and cpus > resources.get("CPU", 0):  # a cluster may grow, this one not
            raise ConfigError(
                f"KADAPT_TORCH_THREADS={cpus} asks each Ray task for more CPUs than this machine's Ray instance "
                f"has ({resources.get('CPU', 0):g}); lower it"
            )
        options: dict[str, Any] = {
            "name": f"kadapt-{kind}-{job_id[:8]}",
            "num_cpus": cpus,
            "max_retries": 0,  # a rerun is the user's call: `kadapt jobs resume`
            "runtime_env": {"env_vars": task_environment(catalog, cpus)},
        }
        if kind in GPU_KINDS and resources.get("GPU", 0) >= 1:
            options["num_gpus"] = 1
        owner = uuid.uuid4().hex  # the attempt's token: its watcher touches the job only while it is this attempt's
        task = self._remote.options(**options).remote(job_id, options["runtime_env"]["env_vars"], owner)
        if wait:
            self._follow(ray, catalog, job_id, task, listeners or [], owner)
            return
        watcher = threading.Thread(
            target=self._settle,
            args=(ray, catalog, job_id, task, owner),
            name=f"kadapt-ray-{job_id[:8]}",
            daemon=True,
        )
        self.watchers[job_id] = watcher
        watcher.start()

    def _follow(self, ray, catalog, job_id: str, task, listeners: list[Callable], owner: str) -> None:
        """Wait for the task, feeding the listeners the progress the job writes to the catalog."""
        progress = JobProgress(job_id)
        finished = False
        while not finished:
            finished = bool(ray.wait([task], timeout=POLL_SECONDS)[0])
            if finished:
                self._settle(ray, catalog, job_id, task, owner)
            if listeners and (_read_progress(catalog, progress) or finished):
                for listener in listeners:
                    listener(progress)

    def _settle(self, ray, catalog, job_id: str, task, owner: str) -> None:
        """Once the task ends, record on the job what the job itself could not: that its task died."""
        try:
            ray.get(task)
        except ray.exceptions.RayTaskError as exc:  # raised outside run_job's own error handling
            reason = "the Ray task running this job failed: " + _ANSI.sub("", str(exc))
            stop_job(catalog, job_id, owner, "failed", reason)
        except ray.exceptions.RayError as exc:  # worker or node died, out of memory, runtime env failed, ...
            reason = _ANSI.sub("", str(exc)).strip().splitlines()[0]
            stop_job(
                catalog,
                job_id,
                owner,
                "interrupted",
                f"the Ray task running this job stopped ({type(exc).__name__}: {reason}); "
                f"run `kadapt jobs resume {job_id}` to continue",
            )
        finally:
            self.watchers.pop(job_id, None)


def _read_progress(catalog, progress: JobProgress) -> bool:
    """Update ``progress`` from the job's row; return whether it changed."""
    from kadapt.contracts import Job

    with catalog.session() as session:
        job = session.get(Job, progress.job_id)
        current = (job.progress_done, job.progress_total, job.message) if job else None
    if current is None or current == (progress.done, progress.total, progress.message):
        return False
    progress.done, progress.total, progress.message = current
    return True


def stop_job(catalog, job_id: str, owner: str, state: str, reason: str) -> None:
    """Mark a job whose task ended without finishing it, unless the job reached a terminal state itself or
    another attempt (a resume) owns it now: the task's attempt, or none if it died before claiming the job."""
    from kadapt.contracts import Job, utcnow

    with catalog.session() as session:
        job = session.get(Job, job_id)
        if job is None or job.state in TERMINAL_STATES:
            return
        if job.owner != owner and not (job.state == "queued" and job.owner is None):
            return
        job.state = state
        job.error = reason
        job.log = (job.log or "") + f"{utcnow().strftime('%H:%M:%S')} {reason.splitlines()[0]}\n"
        job.heartbeat_at = utcnow()
        if state == "failed":
            job.finished_at = utcnow()


def _add_log_line(catalog, job_id: str, line: str) -> None:
    from kadapt.contracts import Job, utcnow

    with catalog.session() as session:
        job = session.get(Job, job_id)
        if job is not None:
            job.log = (job.log or "") + f"{utcnow().strftime('%H:%M:%S')} {line}\n"


@hookimpl
def register_job_runners(register):
    register(RayRunner())
