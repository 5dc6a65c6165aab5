"""Activation: which mode (and adapter) a KB serves, and the LoRA server told so."""

from __future__ import annotations

from kadapt.adapters import ADAPTER_MODES, ready_adapter, trained_mode
from kadapt.catalog import Catalog, KnowledgeBase
from kadapt.errors import InvalidInput
from kadapt.kbs import MODES, get_kb
from kadapt.lora_server import publish_adapter, withdraw_adapter
from kadapt.settings import Settings, get_settings

__all__ = ["set_mode"]


def set_mode(
    catalog: Catalog, slug: str, mode: str, adapter_id: str | None = None, *, settings: Settings | None = None
) -> KnowledgeBase:
    """Serve the KB in ``mode``; a fine-tuned mode uses the given (or the newest ready) adapter of that mode, and
    aug-ft+rag an aug-ft adapter (with retrieved documents in the prompt).

    With ``KADAPT_LORA_SERVER_URL`` set, the adapter is first exported for the LoRA server and loaded there (an
    adapter vLLM cannot load is refused; a server that does not take it is only a warning), and a KB going back
    to icl has its adapter withdrawn."""
    if mode not in MODES:
        raise InvalidInput(f"invalid mode {mode!r}; use one of {', '.join(MODES)}")
    settings = settings or get_settings()
    kb = get_kb(catalog, slug)
    adapter = None
    if mode != "icl":
        adapter = ready_adapter(catalog, kb, trained_mode(mode), adapter_id)
        if settings.lora_server_url:
            publish_adapter(kb, adapter, settings)
    with catalog.session() as session:
        row = session.get(KnowledgeBase, kb.id)
        row.active_mode, row.active_adapter = mode, adapter.id if adapter else None
    if adapter is None and settings.lora_server_url and kb.active_mode in ADAPTER_MODES:
        withdraw_adapter(slug, settings)
    return row
