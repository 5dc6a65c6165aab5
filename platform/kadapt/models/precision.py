"""Which number format local models compute in: bfloat16 where the hardware has it, float32 elsewhere.

On a CPU with bf16 instructions (``avx512_bf16``, AMX) matrix products under ``torch.autocast`` in bfloat16 ran
2.6x faster for a LoRA training step and 3.2x for a forward pass than float32 (SmolLM2-135M); on a CPU without
them oneDNN emulates bf16 and the same forward ran 7x slower (AMD EPYC with AVX2 only), so ``auto`` keeps
float32 there. Weights, LoRA weights and optimizer state stay float32 on the CPU: autocast casts each matrix
product's inputs, and log-probabilities are summed in float32. A GPU loads its weights in bfloat16.
"""

from __future__ import annotations

import functools
from typing import get_args

from kadapt.settings import Precision

__all__ = ["PRECISIONS", "cpu_bf16", "cpu_has_bf16", "cuda_dtype"]

PRECISIONS: tuple[str, ...] = get_args(Precision)


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 matrix products natively (oneDNN's own check)."""
    import torch

    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def cpu_bf16(precision: str) -> bool:
    """Whether CPU work runs under bf16 autocast: ``auto`` where the CPU has bf16, or as forced."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    return precision == "bf16" or (precision == "auto" and cpu_has_bf16())


def cuda_dtype(precision: str):
    """The dtype a GPU loads the weights in: bfloat16 unless float32 is forced."""
    import torch

    return torch.float32 if precision == "fp32" else torch.bfloat16
