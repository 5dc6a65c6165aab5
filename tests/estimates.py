"""Pilot estimates for tests of the policy engine, the report and the routes that show decisions."""

from __future__ import annotations

from typing import Any

from kadapt.evaluate import wilson


def accuracy(correct: int, n: int, chance: float = 0.5) -> dict[str, Any]:
    low, high = wilson(correct, n)
    return {
        "correct": correct,
        "n": n,
        "accuracy": correct / n,
        "low": low,
        "high": high,
        "chance": chance,
        "best_shortcut": chance,
        "shortcut_level": low <= chance,
    }


MEASURED = {
    "floor": {"verbatim": (26, 48), "reversal": (23, 48)},
    "icl": {"verbatim": (47, 48), "reversal": (44, 48)},
    "ft": {"verbatim": (48, 48), "reversal": (45, 48)},
    "aug-ft": {"verbatim": (48, 48), "reversal": (46, 48)},
}
COSTS = {  # mode -> (one-off USD, per-query USD)
    "icl": (0.0, 0.004),
    "ft": (0.30, 0.001),
    "aug-ft": (0.90, 0.001),
}


def make_estimates(
    measured: dict[str, dict[str, tuple[int, int]]] | None = None,
    costs: dict[str, tuple[float, float]] | None = None,
    served: dict[str, dict[str, tuple[int, int]]] | None = None,
) -> dict[str, Any]:
    """Estimates shaped like ``kadapt.policy.run_pilot``'s result; ``served`` (mode -> kind -> (correct, n)) adds
    served accuracy, else the probes are MC-only."""
    measured = measured or MEASURED
    costs = costs or COSTS
    served_block = None
    if served:
        served_block = {
            "judge": "string",
            "accuracy": [
                {"mode": mode, "kind": kind} | _served_row(*counts)
                for mode, kinds in served.items()
                for kind, counts in kinds.items()
            ],
        }
    return {
        "kb": {"slug": "kb", "title": "test"},
        "snapshot": {"id": None, "hash": "0" * 64, "documents": 72},
        "pilot": {"documents": 72, "kb_documents": 72, "probes": 96, "scale": 1.0, "whole_kb": True},
        "modes": list(measured),
        "accuracy": [
            {"mode": mode, "kind": kind} | accuracy(*counts)
            for mode, kinds in measured.items()
            for kind, counts in kinds.items()
        ],
        "estimates": [
            {
                "mode": mode,
                "accuracy": {kind: accuracy(*counts) for kind, counts in measured[mode].items()},
                "one_off_usd": one_off,
                "per_query_usd": per_query,
                "one_off_seconds": one_off * 1800,
                "per_query_seconds": per_query * 1800,
                "prompt_tokens_per_query": 900 if mode == "icl" else 40,
                "details": {},
                "served": {kind: _served_row(*counts) for kind, counts in served[mode].items()}
                if served and mode in served
                else None,
            }
            for mode, (one_off, per_query) in costs.items()
        ],
        "served": served_block,
        "warnings": [],
    }


def _served_row(correct: int, n: int) -> dict[str, Any]:
    low, high = wilson(correct, n)
    return {"correct": correct, "n": n, "accuracy": correct / n, "low": low, "high": high}
