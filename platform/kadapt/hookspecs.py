"""The hooks a kadapt plugin can implement (pluggy project name ``"kadapt"``).

Contributions come in through a ``register`` callback, as in ``llm``: a plugin calls ``register(obj)``
once per thing it contributes. Every hook is called with keyword arguments only. A built-in plugin uses
exactly these hooks, registered through the ``kadapt`` entry-point group, as a third-party one would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import fastapi
    import typer

# What each hook registers is named in its docstring, not in its signature: the types live in kadapt.contracts,
# which imports the modules that define them, each of which reaches the plugin manager and so this module; naming
# them here, even for type checkers only, would put every one of them in a circle with it.

__all__ = ["hookimpl", "hookspec", "PROJECT_NAME"]

PROJECT_NAME = "kadapt"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_connectors(register: Callable[[type], None]) -> None:
    """Register connector classes that read documents from a kind of source.

    Fires once per process, the first time kadapt needs the list of connectors (``kadapt source add``,
    a sync, ``kadapt plugins``).

    :param register: call ``register(ConnectorClass)`` once per connector. The class subclasses
        :class:`kadapt.connectors.Connector`: it has a unique ``kind`` string, a pydantic ``Config``
        model that validates a source's configuration, and ``load()`` yielding documents.

    Return nothing; the return value is ignored.
    """


@hookspec
def register_augmenters(register: Callable[[Any], None]) -> None:
    """Register augmenters that write extra training text from a knowledge base.

    Fires once per process, the first time an augmentation job or ``kadapt plugins`` needs them.

    :param register: call ``register(augmenter)`` once per augmenter. An augmenter has a unique ``name``,
        a ``scope`` (``"local"`` for one sentence or chunk at a time, ``"global"`` for one document with
        the rest of the knowledge base in context) and ``augment(kb, model)`` yielding augmentations.

    Return nothing; the return value is ignored.
    """


@hookspec
def register_probe_generators(register: Callable[[Any], None]) -> None:
    """Register probe generators that write held-out generalization probes for a knowledge base.

    Fires once per process, the first time a probe job or ``kadapt plugins`` needs them.

    :param register: call ``register(generator)`` once per generator. A generator has a unique ``name``
        and ``generate(kb, model)`` yielding multiple-choice probes (kind, question, choices, answer),
        which are never used for training.

    Return nothing; the return value is ignored.
    """


@hookspec
def register_judges(register: Callable[[Any], None]) -> None:
    """Register judges that rule whether a free-form chat answer to a probe is right.

    Fires once per process, the first time an answer is judged (``KADAPT_JUDGE`` picks the judge by name)
    or ``kadapt plugins`` runs.

    :param register: call ``register(judge)`` once per judge. A judge has a unique ``name``, a one-line
        ``description`` and ``judge(answer, *, accepted, distractors, question)`` returning a
        :class:`kadapt.judge.Verdict`: right when ``answer`` gives one of the ``accepted`` answers (aliases
        of one answer) and names none of the ``distractors``. Built in: ``string`` (string match and token
        F1, no model); an LLM judge is one a stronger model backs.

    Return nothing; the return value is ignored.
    """


@hookspec
def register_models(register: Callable[[Any], None]) -> None:
    """Register model backends (local transformers, OpenAI-compatible servers, ...).

    Fires once per process, the first time a model is needed for serving, augmentation or scoring.

    :param register: call ``register(backend)`` once per backend. A backend has a unique ``name`` and
        opens a model from a knowledge base's model setting for generation and (optionally) scoring.

    Return nothing; the return value is ignored.
    """


@hookspec
def register_policies(register: Callable[[Any], None]) -> None:
    """Register adaptation policies that turn measured estimates and a workload into a decision.

    Fires once per process, the first time a decision is made or ``kadapt plugins`` runs.

    :param register: call ``register(policy)`` once per policy. A policy has a unique ``name`` and
        ``decide(estimates, workload)`` returning the chosen mode with its rationale.

    Return nothing; the return value is ignored.
    """


@hookspec
def register_job_runners(register: Callable[[Any], None]) -> None:
    """Register job runners that decide where jobs (sync, augment, probe, train, evaluate, adapt) run.

    Fires once per process, the first time a job is submitted or ``kadapt plugins`` runs.

    :param register: call ``register(runner)`` once per runner. A runner has a unique ``name``, a
        ``description`` and ``submit(catalog, job_id, *, wait, listeners)``, which has the job run
        somewhere by :func:`kadapt.jobs.run_job` (returning once it finished when ``wait`` is true, calling
        each listener with the job's progress meanwhile). Job state lives in the catalog whatever the runner.

    Return nothing; the return value is ignored.
    """


@hookspec
def register_job_kinds(register: Callable[[Any], None]) -> None:
    """Register kinds of background job (kadapt's own, in :mod:`kadapt.job_kinds`: sync, augment, probe, train,
    evaluate, adapt).

    Fires once per process, the first time a job is created or run or ``kadapt plugins`` runs.

    :param register: call ``register(kind)`` once per kind: a :class:`kadapt.jobs.JobKind` with a unique
        ``kind``, ``run(context, **params)`` returning the job's JSON-able result (``context`` a
        :class:`kadapt.jobs.JobContext`: progress, log, cancellation), and an optional ``check(catalog,
        **params)`` that raises a :class:`kadapt.errors.KadaptError` when the job cannot succeed, run before the
        job is created.

    Return nothing; the return value is ignored.
    """


@hookspec
def register_commands(cli: typer.Typer) -> None:
    """Add commands to the ``kadapt`` command line.

    Fires once when the CLI is built, before arguments are parsed.

    :param cli: the root :class:`typer.Typer` application; add commands with ``@cli.command()`` or
        sub-applications with ``cli.add_typer(...)``.

    Return nothing; the return value is ignored.
    """


@hookspec
def register_routes(app: fastapi.FastAPI) -> None:
    """Add routes to the kadapt web application.

    Fires once in ``create_app()``, after the built-in routers are included.

    :param app: the :class:`fastapi.FastAPI` application; add routers with ``app.include_router(...)``.

    Return nothing; the return value is ignored.
    """
