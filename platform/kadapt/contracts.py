"""The plugin contract: every type a plugin uses, in one place.

A plugin (a connector, augmenter, probe generator, judge, model backend, policy, job runner or job kind) imports
from ``kadapt.contracts``, ``kadapt.models``, ``kadapt.errors`` and ``kadapt`` (``hookimpl``) only; what it
registers through a hook (:mod:`kadapt.hookspecs`) has the shape of one of the Protocols here. The
``import-linter`` contract in ``pyproject.toml`` holds the built-in plugins to this, so that what they use is
what a third-party plugin can count on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from kadapt.augment import AugmentContext, Augmenter, Draft, SourceDocument
from kadapt.catalog import Catalog, Job, open_catalog, utcnow
from kadapt.connectors import Connector, ConnectorConfig, ListingIncomplete, LoadFailure, Unchanged
from kadapt.costs import ModeEstimate, PolicyDecision, Workload, money
from kadapt.credentials import (
    HostCredentials,
    OAuthClient,
    credentials_entry,
    host_credentials,
    http_client_options,
    read_credentials_file,
)
from kadapt.entities import MONTHS, entity_units, reverse_sentence
from kadapt.hookspecs import hookimpl
from kadapt.http_api import ApiConnector, ApiError, ApiResponse, api_bytes, api_get, api_json, base_url
from kadapt.jobs import TERMINAL_STATES, JobContext, JobKind, get_job, run_job
from kadapt.judge import Judge, StringJudge, Verdict, normalise
from kadapt.models.base import (
    MODEL_LOAD_LOCK,
    ChatMessage,
    Completion,
    GenerationParams,
    Model,
    ModelBackend,
    ScoringNotSupported,
)
from kadapt.modes import MODES, Mode
from kadapt.network import check_public_host, pin_git_remote, public_http_client
from kadapt.parsing import check_size, parse_document, suffix_for_content_type
from kadapt.paths import DEFAULT_INCLUDE, PathFilter, files_under
from kadapt.plugins import get_plugins
from kadapt.probes import ProbeContext, ProbeDraft, ProbeGenerator
from kadapt.settings import Settings, get_settings
from kadapt.statements import Statement, conclusions, follows, parse_statement, same_claim
from kadapt.synthetic import probes_from_documents
from kadapt.text import STOPWORDS, first_line, is_copy, keeps_terms, key_terms, negated, sentences, starts_like

__all__ = [
    "ApiConnector",
    "ApiError",
    "ApiResponse",
    "DEFAULT_INCLUDE",
    "MODEL_LOAD_LOCK",
    "MODES",
    "MONTHS",
    "STOPWORDS",
    "TERMINAL_STATES",
    "AugmentContext",
    "Augmenter",
    "Catalog",
    "ChatMessage",
    "Completion",
    "Connector",
    "ConnectorConfig",
    "Draft",
    "GenerationParams",
    "HostCredentials",
    "OAuthClient",
    "Job",
    "JobContext",
    "JobKind",
    "JobRunner",
    "Judge",
    "ListingIncomplete",
    "LoadFailure",
    "Mode",
    "ModeEstimate",
    "Model",
    "ModelBackend",
    "PathFilter",
    "Policy",
    "PolicyDecision",
    "ProbeContext",
    "ProbeDraft",
    "ProbeGenerator",
    "ScoringNotSupported",
    "Settings",
    "SourceDocument",
    "Statement",
    "StringJudge",
    "Unchanged",
    "Verdict",
    "Workload",
    "money",
    "api_bytes",
    "api_get",
    "api_json",
    "base_url",
    "check_public_host",
    "check_size",
    "conclusions",
    "credentials_entry",
    "entity_units",
    "files_under",
    "first_line",
    "follows",
    "get_job",
    "get_plugins",
    "get_settings",
    "hookimpl",
    "host_credentials",
    "http_client_options",
    "is_copy",
    "keeps_terms",
    "key_terms",
    "negated",
    "normalise",
    "open_catalog",
    "parse_document",
    "parse_statement",
    "pin_git_remote",
    "probes_from_documents",
    "public_http_client",
    "read_credentials_file",
    "reverse_sentence",
    "run_job",
    "same_claim",
    "sentences",
    "starts_like",
    "suffix_for_content_type",
    "utcnow",
]


class Policy(Protocol):
    """What ``register_policies`` registers: turns the pilot's estimates and a KB's workload into a decision.

    Optional: ``check(workload)`` raises :class:`kadapt.errors.InvalidInput` when the workload lacks what the
    policy needs (run before anything is measured); ``pinned_mode(workload)`` names the mode the policy chooses
    whatever is measured (the ``fixed`` policy), so that a KB too large for it is refused up front."""

    name: str
    description: str

    def decide(self, estimates: Sequence[ModeEstimate], workload: Workload) -> PolicyDecision: ...


class JobRunner(Protocol):
    """What ``register_job_runners`` registers: where jobs run. ``submit`` has the job run somewhere by
    :func:`kadapt.jobs.run_job` (returning once it finished when ``wait``, calling each listener with the job's
    progress meanwhile); job state lives in the catalog whatever the runner."""

    name: str
    description: str

    def submit(
        self, catalog: Catalog, job_id: str, *, wait: bool, listeners: list[Callable[[JobContext], None]] | None
    ) -> Any: ...
