"""Activation: which mode (and adapter) a KB serves, and the LoRA server told so."""

from __future__ import annotations

from pathlib import Path

from kadapt.adapters import active_adapter, ready_adapter
from kadapt.catalog import Catalog, KnowledgeBase
from kadapt.errors import InvalidInput
from kadapt.kbs import get_kb, list_kbs
from kadapt.lora_server import ExportResult, export_adapters, publish_adapter, withdraw_adapter
from kadapt.modes import ADAPTER_MODES, MODES, trained_mode
from kadapt.settings import Settings, get_settings

__all__ = ["export_active_adapters", "set_mode"]


def set_mode(
    catalog: Catalog, slug: str, mode: str, adapter_id: str | None = None, *, settings: Settings | None = None
) -> KnowledgeBase:
    """Serve the KB in ``mode``; a fine-tuned mode uses the given adapter of that mode, and aug-ft+rag an aug-ft
    adapter (with retrieved documents in the prompt). Without one: for aug-ft, the newest ready adapter trained on
    the augmentation recipe the KB's decision chose (when its pilot compared several), else the newest ready one.

    With ``KADAPT_LORA_SERVER_URL`` set, the adapter is first exported for the LoRA server and loaded there (an
    adapter vLLM cannot load is refused; a server that does not take it is only a warning), and a KB going back
    to icl has its adapter withdrawn."""
    if mode not in MODES:
        raise InvalidInput(f"invalid mode {mode!r}; use one of {', '.join(MODES)}")
    settings = settings or get_settings()
    kb = get_kb(catalog, slug)
    adapter = None
    if mode != "icl":
        adapter = ready_adapter(catalog, kb, trained_mode(mode), adapter_id or _decided_adapter(catalog, kb, mode))
        if settings.lora_server_url:
            publish_adapter(kb, adapter, settings)
    with catalog.session() as session:
        row = session.get(KnowledgeBase, kb.id)
        row.active_mode, row.active_adapter = mode, adapter.id if adapter else None
    if adapter is None and settings.lora_server_url and kb.active_mode in ADAPTER_MODES:
        withdraw_adapter(slug, settings)
    return row


def _decided_adapter(catalog: Catalog, kb: KnowledgeBase, mode: str) -> str | None:
    """The newest ready aug-ft adapter trained on the recipe the KB's latest decision chose, if there is one."""
    from kadapt.adapters import list_adapters
    from kadapt.kbs import latest_decision

    if trained_mode(mode) != "aug-ft":
        return None
    decision = latest_decision(catalog, kb.slug)
    recipe = (((decision.estimates if decision else {}).get("details") or {}).get("aug-ft") or {}).get("recipe")
    if not recipe:
        return None
    for adapter in list_adapters(catalog, kb.slug):  # newest first
        if adapter.mode == "aug-ft" and adapter.state == "ready" and adapter.config.get("augmenters") == list(recipe):
            return adapter.id
    return None


def export_active_adapters(
    catalog: Catalog,
    slugs: list[str] | None = None,
    directory: Path | str | None = None,
    settings: Settings | None = None,
) -> ExportResult:
    """Export the active adapter of each KB in ``slugs`` (default: every KB served from an adapter) in the layout
    vLLM loads (:func:`kadapt.lora_server.export_adapters`); a KB in ``slugs`` without one is refused."""
    if slugs:
        chosen = []
        for slug in dict.fromkeys(slugs):
            kb = get_kb(catalog, slug)
            adapter = active_adapter(catalog, kb)
            if adapter is None:
                raise InvalidInput(
                    f"KB {slug!r} is served in {kb.active_mode} mode, without an adapter; activate one with "
                    f"`kadapt kb set-mode {slug} ft` (or aug-ft), or train one with `kadapt train {slug} --activate`"
                )
            chosen.append((kb, adapter))
    else:
        chosen = [(kb, adapter) for kb in list_kbs(catalog) if (adapter := active_adapter(catalog, kb)) is not None]
    return export_adapters(chosen, full=not slugs, directory=directory, settings=settings)
