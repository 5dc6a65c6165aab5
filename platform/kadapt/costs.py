"""The cost model: one-off and per-query cost of each mode, and the break-even query volume.

Per mode m: one-off cost ``C0(m)`` (augmentation tokens generated + training tokens processed, at the
throughput measured on this deployment, priced at ``KADAPT_USD_PER_HOUR``) and per-query cost ``c(m)``
(prompt + completion tokens at the measured serving throughput). Over a horizon of Q queries
``total(m) = C0(m) + Q * c(m)``; the break-even volume between modes a and b is
``Q* = (C0(b) - C0(a)) / (c(a) - c(b))``.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kadapt.errors import InvalidInput
from kadapt.paths import write_atomic

__all__ = [
    "CADENCES",
    "ChangeRate",
    "ModeEstimate",
    "UpkeepTerms",
    "plan_upkeep",
    "Throughput",
    "PolicyDecision",
    "Workload",
    "break_even",
    "break_even_table",
    "money",
    "measure_serving",
    "serving_throughput",
    "total_cost",
]


# the largest workload figures accepted: far past any real deployment, small enough that costs over the
# horizon stay finite numbers
MAX_QUERIES_PER_DAY = 1e12
MAX_HORIZON_DAYS = 36_500.0  # a hundred years
MAX_BUDGET_USD = 1e15


@dataclass
class PolicyDecision:
    """A policy's choice: the mode, and why (one line per consideration)."""

    mode: str
    rationale: str


@dataclass
class Workload:
    """What a KB is expected to serve, and what it must get right (``KnowledgeBase.workload``)."""

    queries_per_day: float = 100.0
    horizon_days: float = 90.0
    accuracy_floor: float = 0.6  # the lower 95% bound every cared-for probe kind must reach
    kinds: list[str] | None = None  # probe kinds the KB cares about; None = every kind measured
    budget_usd: float | None = None  # total over the horizon; modes over it are not chosen
    answer_tokens: int = 64  # completion tokens per query
    mode: str | None = None  # for the ``fixed`` policy

    def __post_init__(self) -> None:
        if not 0 <= self.queries_per_day <= MAX_QUERIES_PER_DAY or not 0 < self.horizon_days <= MAX_HORIZON_DAYS:
            raise InvalidInput(
                f"workload: queries_per_day must be between 0 and {MAX_QUERIES_PER_DAY:g}, and horizon_days "
                f"over 0 and at most {MAX_HORIZON_DAYS:g}"
            )
        if self.budget_usd is not None and not 0 <= self.budget_usd <= MAX_BUDGET_USD:
            raise InvalidInput(f"workload: budget_usd must be between 0 and {MAX_BUDGET_USD:g}")
        if not 0 <= self.accuracy_floor <= 1:
            raise InvalidInput("workload: accuracy_floor must be between 0 and 1")
        if self.answer_tokens < 1:
            raise InvalidInput("workload: answer_tokens must be at least 1")

    @property
    def queries(self) -> float:
        """Queries over the horizon."""
        return self.queries_per_day * self.horizon_days

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Workload:
        data = dict(data or {})
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise InvalidInput(f"workload: unknown field(s) {', '.join(sorted(unknown))}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ModeEstimate:
    """What a mode is expected to achieve and cost on the full KB."""

    mode: str
    accuracy: dict[str, dict[str, Any]]  # kind -> {accuracy, low, high, n, chance, ...}
    one_off_usd: float = 0.0
    per_query_usd: float = 0.0
    one_off_seconds: float = 0.0
    per_query_seconds: float = 0.0
    prompt_tokens_per_query: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    # served accuracy per kind (free-form chat answers, judged), None where the probes are MC-only; ``accuracy``
    # above is multiple-choice likelihood: kadapt.policy hands policies the one KADAPT_POLICY_MEASURE picks
    served: dict[str, dict[str, Any]] | None = None
    # keeping an adapter mode fresh over the horizon as the KB changes (:func:`plan_upkeep`): its retrains and the
    # changed documents its prompts carry between them; 0 for icl, which reads the current documents anyway
    upkeep_usd: float = 0.0
    upkeep: dict[str, Any] | None = None

    def total(self, queries: float) -> float:
        return self.one_off_usd + self.upkeep_usd + queries * self.per_query_usd

    def mean_accuracy(self, kinds: list[str] | None = None) -> float:
        rows = [row for kind, row in self.accuracy.items() if kinds is None or kind in kinds]
        return sum(row["accuracy"] for row in rows) / len(rows) if rows else 0.0

    def meets(self, floor: float, kinds: list[str] | None = None) -> tuple[bool, list[str]]:
        """Whether every cared-for kind's lower bound reaches ``floor``; the kinds that do not."""
        wanted = kinds if kinds is not None else list(self.accuracy)
        short = [kind for kind in wanted if kind not in self.accuracy or self.accuracy[kind]["low"] < floor]
        return not short, short

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModeEstimate:
        return cls(**{key: value for key, value in data.items() if key in cls.__dataclass_fields__})


def money(value: float) -> str:
    """A cost as decisions word it: four decimals under a dollar ($0.0027), cents from there ($12.34)."""
    return f"${value:,.4f}" if value < 1 else f"${value:,.2f}"


def total_cost(estimate: ModeEstimate, queries: float) -> float:
    return estimate.total(queries)


def break_even(a: ModeEstimate, b: ModeEstimate) -> float | None:
    """Queries from which ``b`` costs less in total than ``a`` (one-off and upkeep over the horizon counted as
    fixed): 0 when b is never dearer, None when never."""
    fixed_a, fixed_b = a.one_off_usd + a.upkeep_usd, b.one_off_usd + b.upkeep_usd
    if fixed_b <= fixed_a and b.per_query_usd <= a.per_query_usd:
        return 0.0
    if b.per_query_usd >= a.per_query_usd:
        return None
    return (fixed_b - fixed_a) / (a.per_query_usd - b.per_query_usd)


@dataclass
class ChangeRate:
    """How fast a KB's documents change, from its snapshot history (:func:`kadapt.delta.change_rate`)."""

    documents_per_day: float  # added, changed or removed
    characters_per_day: float  # of the added and changed ones (estimated from the KB's mean document length)
    days: float  # the span measured
    snapshots: int  # snapshots in it
    documents: int  # the KB's documents now
    characters: int  # their characters


# cadences a retrain plan is chosen from, in days
CADENCES = (1, 2, 3, 7, 14, 30, 60, 90, 180, 365)


@dataclass
class UpkeepTerms:
    """What the upkeep of an adapter mode is priced with (settings and the serving speed)."""

    usd_per_prompt_token: float  # prefill of one more prompt token
    warm_start_max: int  # KADAPT_WARM_START_MAX: warm starts between full trainings
    replay_share: float  # what a warm start costs per unchanged document, as a share of a full training's cost
    # what a warm start costs per changed document, as a share of a full training's cost: its passes over them
    # (warm_start_shape) of a full training's epochs
    changed_share: float
    max_share: float  # KADAPT_DELTA_MAX_SHARE: the delta past which a KB is stale
    max_chars: int  # KADAPT_DELTA_MAX_CHARS
    # a question about a changed document is answered as icl answers it (kadapt.serving): at icl's prompt length
    icl_prompt_tokens: float = 0.0
    delta_routed: bool = (
        True  # such questions leave the adapter for icl (ft, aug-ft); aug-ft+rag reads documents anyway
    )


def warm_start_shape(epochs: int, warm_epochs: int, changed_passes: int) -> tuple[int, int]:
    """(the epochs a warm start runs, the times the changed documents' examples are repeated in each epoch) for a
    full training of ``epochs``: ``warm_epochs`` (KADAPT_WARM_START_EPOCHS) at most ``epochs``, and
    ``changed_passes`` (KADAPT_WARM_START_CHANGED_PASSES; 0: ``epochs``; at most ``epochs``) spread over them,
    rounded up. The changed documents get epochs x repeats passes."""
    runs = max(1, min(epochs, warm_epochs))
    return runs, math.ceil(min(changed_passes or epochs, epochs) / runs)


def _upkeep_at(estimate: ModeEstimate, rate: ChangeRate, workload: Workload, terms: UpkeepTerms, days: float):
    """(what keeping the mode fresh costs over the horizon, its parts) when the adapter is trained again every
    ``days``: its retrains (fixed) and the delta's prompt tokens (per query)."""
    changed = min(rate.documents, rate.documents_per_day * days)
    share = changed / max(1, rate.documents)
    # examples trained on: the changed documents for their passes, the unchanged ones for the warm epochs
    warm = estimate.one_off_usd * min(1.0, share * terms.changed_share + terms.replay_share * (1 - share))
    per_retrain = (terms.warm_start_max * warm + estimate.one_off_usd) / (terms.warm_start_max + 1)
    retrains = max(0, math.ceil(workload.horizon_days / days - 1e-9) - 1)  # none at the horizon's end
    # the share of questions about a changed document grows from 0 to ``share`` between retrains: half on average
    delta_tokens = share / 2 * terms.icl_prompt_tokens if terms.delta_routed else 0.0
    delta_per_query = delta_tokens * terms.usd_per_prompt_token
    parts = {
        "cadence_days": days,
        "retrains": retrains,
        "retrain_usd": per_retrain,
        "delta_tokens_per_query": round(delta_tokens, 1),
        "delta_usd_per_query": delta_per_query,
        "stale_documents": round(changed, 1),  # the delta just before a retrain
        "stale_share": round(share, 4),
    }
    return retrains * per_retrain + workload.queries * delta_per_query, parts


def plan_upkeep(estimate: ModeEstimate, rate: ChangeRate | None, workload: Workload, terms: UpkeepTerms) -> None:
    """Set ``estimate``'s upkeep: the retrain cadence (from :data:`CADENCES`, at most the horizon) that costs least
    over the horizon while the delta stays under the staleness limits; the most frequent when none keeps it there
    (``within_limits`` false). The retrains are a fixed cost over the horizon (``upkeep_usd``); the delta's prompt
    tokens are paid by every query (added to ``per_query_usd``). No change measured: no retrains, and it says so."""
    if rate is None or rate.documents_per_day <= 0:
        estimate.upkeep_usd = 0.0
        estimate.upkeep = {"cadence_days": None, "why": "no change measured in the KB's snapshot history"}
        return
    limit_documents = terms.max_share * max(1, rate.documents)
    candidates = [days for days in CADENCES if days <= workload.horizon_days] or [workload.horizon_days]
    fresh = [
        days
        for days in candidates
        if rate.documents_per_day * days <= limit_documents and rate.characters_per_day * days <= terms.max_chars
    ]
    priced = [(*_upkeep_at(estimate, rate, workload, terms, days), days) for days in fresh or candidates[:1]]
    _, parts, _ = min(priced, key=lambda item: (item[0], -item[2]))
    estimate.upkeep_usd = parts["retrains"] * parts["retrain_usd"]
    estimate.per_query_usd += parts["delta_usd_per_query"]
    estimate.upkeep = parts | {"within_limits": bool(fresh), "usd": estimate.upkeep_usd}


def break_even_table(estimates: list[ModeEstimate], base: str = "icl") -> list[dict[str, Any]]:
    """Break-even volume from ``base`` to every other mode."""
    by_mode = {estimate.mode: estimate for estimate in estimates}
    if base not in by_mode:
        return []
    return [
        {"from": base, "to": estimate.mode, "queries": break_even(by_mode[base], estimate)}
        for estimate in estimates
        if estimate.mode != base
    ]


@dataclass
class Throughput:
    """Serving speed measured on this deployment: prompt tokens and generated tokens per second."""

    prefill_tokens_per_second: float
    decode_tokens_per_second: float
    measured_at: float
    model: str
    threads: int

    def query_seconds(self, prompt_tokens: float, completion_tokens: float) -> float:
        return prompt_tokens / self.prefill_tokens_per_second + completion_tokens / self.decode_tokens_per_second


def measure_serving(model, *, prompt_tokens: int = 512, completion_tokens: int = 24) -> Throughput:
    """Time one request of ``prompt_tokens`` with 1 and with ``completion_tokens`` generated tokens: the
    first gives the prefill speed, the difference the decode speed."""
    from kadapt.models.base import GenerationParams

    filler = " ".join(["The quarterly report lists every office and its budget."] * (prompt_tokens // 10 + 1))
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is not None:
        ids = tokenizer(filler, add_special_tokens=False).input_ids[:prompt_tokens]
        filler = tokenizer.decode(ids)
    ask = "\n\nList, one per line, twenty offices that could appear in such a report."
    messages = [{"role": "user", "content": filler + ask}]
    model.generate_batch([messages], GenerationParams(max_tokens=1))  # warm-up
    started = time.perf_counter()
    first = model.generate_batch([messages], GenerationParams(max_tokens=1))[0]
    prefill_seconds = time.perf_counter() - started
    for seed in range(3):  # sampled, so a run that ends early is followed by a different one
        params = GenerationParams(max_tokens=completion_tokens, temperature=0.8 if seed else 0.0, seed=seed)
        started = time.perf_counter()
        full = model.generate_batch([messages], params)[0]
        total_seconds = time.perf_counter() - started
        if full.completion_tokens >= completion_tokens // 2:
            break
    else:
        raise RuntimeError("the model kept stopping after a few tokens; cannot time its decoding")
    generated = full.completion_tokens - 1
    decode_seconds = max(1e-3, total_seconds - prefill_seconds)
    return Throughput(
        prefill_tokens_per_second=first.prompt_tokens / max(prefill_seconds, 1e-3),
        decode_tokens_per_second=generated / decode_seconds,
        measured_at=time.time(),
        model=getattr(model, "model_id", "?"),
        threads=_threads(),
    )


def _threads() -> int:
    try:
        import torch

        return torch.get_num_threads()
    except ImportError:  # pragma: no cover - torch is a dependency
        return os.cpu_count() or 1


def serving_throughput(model, data_dir: Path, *, max_age_seconds: float = 7 * 86400) -> Throughput:
    """The serving throughput of ``model`` here: measured once, then cached in the data dir for a week."""
    path = data_dir / "throughput.json"
    key = f"{getattr(model, 'model_id', '?')}@{_threads()}"
    cached: dict[str, Any] = {}
    if path.is_file():
        try:
            cached = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            cached = {}
    entry = cached.get(key)
    if entry and time.time() - entry.get("measured_at", 0) < max_age_seconds:
        return Throughput(**entry)
    measured = measure_serving(model)
    cached[key] = asdict(measured)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(cached, indent=2))
    return measured
