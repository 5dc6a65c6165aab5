"""KB adapters on a multi-LoRA server (vLLM ``--enable-lora``): the export it loads, and runtime registration.

The export directory (default ``<data dir>/vllm-adapters``) holds one folder per KB, named after the KB, with
exactly what vLLM reads: ``adapter_config.json`` (PEFT LoRA, ``base_model_name_or_path`` = the base model's
Hugging Face id, the name the server serves it under) and ``adapter_model.safetensors``. Beside them,
``lora-modules.json`` lists the folders kadapt wrote as vLLM's JSON ``--lora-modules`` objects (kadapt never
touches other folders there). The folder layout is also the one vLLM's filesystem LoRA resolver looks a model
name up in.

With ``KADAPT_LORA_SERVER_URL`` set, activating an adapter exports it and asks the server to load it
(``POST {url}/load_lora_adapter``); serving a KB in icl again removes it. A server that cannot be reached, or
that has no runtime loading, is a logged warning: the export is in place for its next start.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shlex
import shutil
import uuid
from collections.abc import Iterator, Sequence
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kadapt.catalog import Adapter, KnowledgeBase
from kadapt.errors import InvalidInput
from kadapt.paths import publish_folder, write_atomic
from kadapt.settings import Settings, get_settings

__all__ = [
    "LORA_MODULES_FILE",
    "VLLM_LORA_RANKS",
    "ExportResult",
    "ExportedAdapter",
    "export_adapters",
    "export_dir",
    "lora_modules",
    "max_lora_rank",
    "publish_adapter",
    "vllm_commands",
    "withdraw_adapter",
    "write_adapter",
]

log = logging.getLogger("kadapt.lora_server")

# The values vLLM accepts for --max-lora-rank; an adapter's rank must not exceed the server's.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
LORA_MODULES_FILE = "lora-modules.json"
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
_WEIGHT_PREFIX = "base_model.model."
_WEIGHT_SUFFIXES = (".lora_A.weight", ".lora_B.weight")


@dataclass
class ExportedAdapter:
    kb: str
    adapter: str
    mode: str
    base_model: str  # the Hugging Face id the server serves the base model under
    rank: int
    path: str
    changed: bool  # False when the folder already held exactly this adapter


@dataclass
class ExportResult:
    directory: str
    exported: list[ExportedAdapter]
    removed: list[str] = field(default_factory=list)  # folders of KBs that no longer serve an adapter
    modules: list[dict[str, str]] = field(default_factory=list)  # the content of lora-modules.json

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"vllm_commands": [shlex.join(command) for command in vllm_commands(self.directory)]}


def export_dir(settings: Settings) -> Path:
    """Where activation exports adapters, and ``kadapt adapters export`` by default."""
    return settings.data_dir / "vllm-adapters"


def _vllm_config(kb: KnowledgeBase, adapter: Adapter) -> tuple[dict[str, Any], Path]:
    """The adapter's config as vLLM will read it and its weights file; InvalidInput names what vLLM cannot load."""
    from kadapt.models import hub_id

    source = Path(adapter.path)
    if not (source / CONFIG_FILE).is_file() or not (source / WEIGHTS_FILE).is_file():
        raise InvalidInput(
            f"adapter {adapter.id} of KB {kb.slug!r} is missing {CONFIG_FILE} or {WEIGHTS_FILE} in {source}; "
            f"train a new one with `kadapt train {kb.slug} --mode {adapter.mode} --activate`"
        )
    config = json.loads((source / CONFIG_FILE).read_text())
    problems = []
    if config.get("peft_type") != "LORA":
        problems.append(f"peft_type is {config.get('peft_type')!r}, not 'LORA'")
    if config.get("use_dora"):
        problems.append("it uses DoRA")
    if config.get("modules_to_save"):
        problems.append(f"it saves whole modules ({config['modules_to_save']})")
    if config.get("bias", "none") != "none":
        problems.append(f"it trains biases (bias={config['bias']!r})")
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        problems.append("it sets per-module ranks (rank_pattern/alpha_pattern)")
    if not isinstance(config.get("r"), int) or not 1 <= config["r"] <= VLLM_LORA_RANKS[-1]:
        problems.append(f"its rank r={config.get('r')!r} is outside 1..{VLLM_LORA_RANKS[-1]}")
    from safetensors import safe_open

    with safe_open(str(source / WEIGHTS_FILE), framework="pt") as weights:
        keys = list(weights.keys())
    stray = [key for key in keys if not (key.startswith(_WEIGHT_PREFIX) and key.endswith(_WEIGHT_SUFFIXES))]
    if stray or not keys:
        problems.append(f"its weights hold tensors other than lora_A/lora_B ({', '.join(stray[:3]) or 'none at all'})")
    if problems:
        raise InvalidInput(
            f"adapter {adapter.id} of KB {kb.slug!r} cannot be served by vLLM: {'; '.join(problems)}; "
            f"train a plain LoRA adapter with `kadapt train {kb.slug} --mode {adapter.mode}`"
        )
    config["base_model_name_or_path"] = hub_id(adapter.base_model)
    config["inference_mode"] = True
    return config, source / WEIGHTS_FILE


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_adapter(directory: Path, slug: str, config: dict[str, Any], weights: Path) -> bool:
    """Write ``directory/slug`` whole (a staging folder renamed into place); False when it already held this."""
    final = directory / slug
    config_text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    if (
        (final / CONFIG_FILE).is_file()
        and (final / WEIGHTS_FILE).is_file()
        and (final / CONFIG_FILE).read_text() == config_text
        and _sha256(final / WEIGHTS_FILE) == _sha256(weights)
    ):
        return False
    staging = directory / f".staging-{slug}-{uuid.uuid4().hex[:8]}"
    try:
        staging.mkdir()
        (staging / CONFIG_FILE).write_text(config_text)
        shutil.copyfile(weights, staging / WEIGHTS_FILE)
        publish_folder(staging, final, replace=True)  # the folder is always whole: the old adapter or the new one
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True


def _write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2) + "\n")


def lora_modules(directory: Path | str) -> list[dict[str, str]]:
    """The adapters kadapt exported to ``directory`` (its ``lora-modules.json``), as vLLM's JSON ``--lora-modules``
    objects; folders kadapt did not write are never listed, nor touched."""
    path = Path(directory) / LORA_MODULES_FILE
    try:
        listed = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return [
        entry | {"path": str(Path(directory) / entry["name"])}
        for entry in listed
        if isinstance(entry, dict) and entry.get("name") and (Path(directory) / entry["name"] / CONFIG_FILE).is_file()
    ]


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Hold the export directory's lock: activations in several processes (API, workers) may export at once."""
    from filelock import FileLock

    directory.mkdir(parents=True, exist_ok=True)
    with FileLock(directory / ".lock"):
        yield


def _update_modules(
    directory: Path, add: Sequence[dict[str, str]] = (), drop: AbstractSet[str] = frozenset()
) -> list[dict[str, str]]:
    """Rewrite ``lora-modules.json`` with ``add`` put in and the KBs in ``drop`` taken out."""
    modules = {entry["name"]: entry for entry in lora_modules(directory) if entry["name"] not in drop}
    modules.update({entry["name"]: entry for entry in add})
    listed = [modules[name] for name in sorted(modules)]
    _write_json(directory / LORA_MODULES_FILE, listed)
    return listed


def _module(directory: Path, slug: str, base_model: str) -> dict[str, str]:
    return {"name": slug, "path": str(directory / slug), "base_model_name": base_model}


def max_lora_rank(ranks: list[int]) -> int:
    """The smallest ``--max-lora-rank`` value vLLM accepts that covers every rank in ``ranks``."""
    top = max(ranks, default=1)
    for rank in VLLM_LORA_RANKS:
        if rank >= top:
            return rank
    raise InvalidInput(f"LoRA rank {top} is over vLLM's largest --max-lora-rank ({VLLM_LORA_RANKS[-1]})")


def vllm_commands(directory: Path | str) -> list[list[str]]:
    """One ``vllm serve`` command per base model, serving every adapter exported in ``directory`` for it."""
    by_base: dict[str, list[tuple[dict[str, str], int]]] = {}
    for module in lora_modules(directory):
        config = json.loads((Path(module["path"]) / CONFIG_FILE).read_text())
        by_base.setdefault(module["base_model_name"], []).append((module, int(config["r"])))
    commands = []
    for base, entries in sorted(by_base.items()):
        rank = max_lora_rank([rank for _, rank in entries])
        # vLLM splits 'name=path' on '=' and takes anything with a comma for JSON: such paths go as JSON
        modules = [
            json.dumps(module)
            if "=" in module["path"] or "," in module["path"]
            else f"{module['name']}={module['path']}"
            for module, _ in entries
        ]
        commands.append(
            ["vllm", "serve", base, "--enable-lora", "--max-lora-rank", str(rank), "--lora-modules", *modules]
        )
    return commands


def export_adapters(
    chosen: list[tuple[KnowledgeBase, Adapter]],
    *,
    full: bool,
    directory: Path | str | None = None,
    settings: Settings | None = None,
) -> ExportResult:
    """Export each (KB, its active adapter) of ``chosen`` (:func:`kadapt.activation.export_active_adapters`
    picks them).

    Every adapter is checked before anything is written. A ``full`` export (every KB served from an adapter) also
    removes the folders it wrote earlier for KBs that no longer serve one. ``lora-modules.json`` lists every
    folder written."""
    settings = settings or get_settings()
    target = Path(directory or export_dir(settings)).expanduser().resolve()
    plans = [(kb, adapter, *_vllm_config(kb, adapter)) for kb, adapter in chosen]
    exported, removed = [], []
    with _locked(target):
        for kb, adapter, config, weights in plans:
            changed = write_adapter(target, kb.slug, config, weights)
            exported.append(
                ExportedAdapter(
                    kb=kb.slug,
                    adapter=adapter.id,
                    mode=adapter.mode,
                    base_model=config["base_model_name_or_path"],
                    rank=config["r"],
                    path=str(target / kb.slug),
                    changed=changed,
                )
            )
        if full:  # KBs kadapt exported before that no longer serve an adapter leave
            serving = {kb.slug for kb, _ in chosen}
            for module in lora_modules(target):
                if module["name"] not in serving:
                    shutil.rmtree(target / module["name"], ignore_errors=True)
                    removed.append(module["name"])
        added = [_module(target, row.kb, row.base_model) for row in exported]
        modules = _update_modules(target, added, set(removed))
    return ExportResult(directory=str(target), exported=exported, removed=removed, modules=modules)


def _client(settings: Settings):
    import httpx

    headers = {}
    if settings.lora_server_api_key and settings.lora_server_api_key.get_secret_value():
        headers["Authorization"] = f"Bearer {settings.lora_server_api_key.get_secret_value()}"
    # an unreachable server must not hold up an activation for long; loading an adapter may take a while
    return httpx.Client(headers=headers, timeout=httpx.Timeout(60.0, connect=5.0))


def _register(settings: Settings, name: str, path: str) -> bool:
    """Ask the LoRA server to load (or reload) adapter ``name`` from ``path``; False (and a warning) if it did not."""
    import httpx

    url = settings.lora_server_url.rstrip("/")
    hint = (
        f"the adapter is exported at {path}; the server serves it once it loads it (start vLLM with "
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, or with --lora-modules from "
        f"{Path(path).parent / LORA_MODULES_FILE})"
    )
    try:
        with _client(settings) as client:
            body = {"lora_name": name, "lora_path": path, "load_inplace": True}
            response = client.post(f"{url}/load_lora_adapter", json=body)
            if response.status_code == 400 and "already" in response.text:
                # a server without in-place reloading keeps the old weights under the name: unload, then load
                client.post(f"{url}/unload_lora_adapter", json={"lora_name": name})
                response = client.post(f"{url}/load_lora_adapter", json={"lora_name": name, "lora_path": path})
    except httpx.HTTPError as exc:
        log.warning("could not reach the LoRA server at %s to load KB %r (%s); %s", url, name, exc, hint)
        return False
    if response.status_code == 404:
        log.warning("the LoRA server at %s has no runtime adapter loading (404); %s", url, hint)
        return False
    if response.is_error:
        log.warning(
            "the LoRA server at %s refused to load KB %r: %s %s; %s",
            url,
            name,
            response.status_code,
            response.text[:300],
            hint,
        )
        return False
    log.info("the LoRA server at %s loaded KB %r from %s", url, name, path)
    return True


def publish_adapter(kb: KnowledgeBase, adapter: Adapter, settings: Settings) -> ExportedAdapter:
    """Export ``adapter`` as KB ``kb``'s folder in the export directory and have the LoRA server load it.

    Raises InvalidInput when vLLM could not load the adapter; a server that does not take it is only a warning."""
    directory = export_dir(settings)
    config, weights = _vllm_config(kb, adapter)
    with _locked(directory):
        changed = write_adapter(directory, kb.slug, config, weights)
        _update_modules(directory, [_module(directory, kb.slug, config["base_model_name_or_path"])])
    path = str(directory / kb.slug)
    if settings.lora_server_url:
        _register(settings, kb.slug, path)
    return ExportedAdapter(
        kb.slug, adapter.id, adapter.mode, config["base_model_name_or_path"], config["r"], path, changed
    )


def withdraw_adapter(slug: str, settings: Settings) -> None:
    """The KB no longer serves an adapter: remove its export and have the LoRA server unload it."""
    import httpx

    directory = export_dir(settings)
    if any(module["name"] == slug for module in lora_modules(directory)):
        with _locked(directory):
            shutil.rmtree(directory / slug, ignore_errors=True)
            _update_modules(directory, drop={slug})
    if not settings.lora_server_url:
        return
    url = settings.lora_server_url.rstrip("/")
    try:
        with _client(settings) as client:
            response = client.post(f"{url}/unload_lora_adapter", json={"lora_name": slug})
    except httpx.HTTPError as exc:
        log.warning("could not reach the LoRA server at %s to unload KB %r: %s", url, slug, exc)
        return
    if response.is_error and response.status_code != 404:  # 404: it was not loaded
        log.warning(
            "the LoRA server at %s did not unload KB %r: %s %s", url, slug, response.status_code, response.text[:300]
        )
