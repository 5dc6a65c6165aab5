"""Freshness benchmark: what each way of serving answers after a KB's documents change, and what it costs to get there.

A KB of short fact documents (several sentence shapes: figures, people, prices, places; made-up names, so the base
model cannot know them) is adapted (ft, from scratch). Then a share of its facts is edited, some documents deleted
and some added, and synced. Each fact's chat question is asked through the serving path, per mode:

- ``icl``: the current documents in the prompt (the KB's icl mode)
- ``ft stale``: the adapter trained before the change, alone (KADAPT_DELTA_ICL off)
- ``ft + delta``: that adapter with the changed documents in the prompt (delta ICL, the default for a changed KB)
- ``ft warm``: an adapter warm-started from it on the changed documents and a replay sample
- ``ft full``: an adapter trained from scratch on the new snapshot
- ``ft before``: the first adapter on the old snapshot, before the change (the baseline for unchanged facts)

Answers are judged by the string judge: a changed fact counts when the new value is named and the old one is not; a
deleted fact when its old value is not stated; added and unchanged facts when their value is named. Targets: with
delta ICL, changed and added facts at least icl's accuracy on them, unchanged ones within 5 points of before; the
warm start within 5 points of the full retrain on all four groups in at most 30% of its training time. Each warm
start's gap to the full retrain is also given as a paired difference on the same facts with its 95% interval, and
whether that interval settles the 5-point margin ("within", "short") or the facts are too few ("unsettled").

    .venv/bin/python bench/freshness.py [--facts 24] [--changed 6] [--deleted 3] [--added 6] [--epochs N] [--lr X]
        [--warm-lr X] [--warm 2x20,6x12,5x10r0.8,5x10@5e-3] [--seeds 0,1,2] [--trainings-only]

With a few facts a group, one answer is many points: ``--seeds`` runs the whole benchmark once per seed (other facts,
another training seed, a KB each) and pools the groups' counts and the training times; each seed's table is printed
too. Beside each training's seconds goes the tokens it trained on: on this machine one full retrain ran at 184 to 406
tokens/s from run to run, so the tokens tell the compute where the seconds wobble (the target is on the seconds).
Results are printed and written to .kadapt/bench-freshness/results.json (each seed's as it ends to
results-seed-N.json); ``--show FILE ...`` prints a stored run, or pools several.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / ".kadapt" / "bench-freshness"
FILES = DATA / "files"

SYLLABLES = ["vel", "dor", "kan", "mir", "tash", "bro", "lin", "quor", "sel", "vard", "ost", "rim", "fen", "gal", "hul"]
# (kind, sentence, question, values): {name} is the fact's subject, {value} what the question asks for
SHAPES = [
    ("figure", "The {name} depot stores {value} pallets.", "How many pallets does the {name} depot store?"),
    ("person", "{value} leads the {name} team.", "Who leads the {name} team?"),
    ("price", "A {name} ticket costs {value} kroner.", "How many kroner does a {name} ticket cost?"),
    ("place", "The {name} fair takes place in {value}.", "Where does the {name} fair take place?"),
]
FIRST = [
    "Orla",
    "Dario",
    "Imelda",
    "Casimir",
    "Noor",
    "Teodor",
    "Ysolde",
    "Bram",
    "Linnea",
    "Aurel",
    "Mireille",
    "Oskar",
]
LAST = ["Vantreight", "Quellmann", "Frostvik", "Belhollow", "Ashgrove", "Kettering", "Marlowe", "Sundqvist"]


def _name(rng: random.Random, taken: set[str]) -> str:
    while True:
        name = (rng.choice(SYLLABLES) + rng.choice(SYLLABLES) + rng.choice(SYLLABLES)).capitalize()
        if name not in taken:
            taken.add(name)
            return name


def _value(kind: str, rng: random.Random, taken: set[str]) -> str:
    while True:
        if kind in ("figure", "price"):
            value = str(rng.randrange(120, 980))
        elif kind == "person":
            value = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        else:
            value = _name(rng, set(taken)) + "by"
        if value not in taken:
            taken.add(value)
            return value


@dataclass
class Fact:
    id: str
    kind: str
    name: str
    value: str

    @property
    def shape(self):
        return next(shape for shape in SHAPES if shape[0] == self.kind)

    @property
    def text(self) -> str:
        return self.shape[1].format(name=self.name, value=self.value)

    @property
    def question(self) -> str:
        return self.shape[2].format(name=self.name)


def build_facts(args, seed: int) -> tuple[list[Fact], list[Fact], dict[str, str]]:
    """(facts before, facts after, fact id -> group after: changed, deleted, added, unchanged)."""
    rng = random.Random(seed)
    names: set[str] = set()
    values: set[str] = set()
    before = []
    for index in range(args.facts):
        kind = SHAPES[index % len(SHAPES)][0]
        before.append(Fact(f"fact-{index:03d}", kind, _name(rng, names), _value(kind, rng, values)))
    order = list(range(args.facts))
    rng.shuffle(order)
    changed = set(order[: args.changed])
    deleted = set(order[args.changed : args.changed + args.deleted])
    groups = {}
    after = []
    for index, fact in enumerate(before):
        if index in deleted:
            groups[fact.id] = "deleted"
        elif index in changed:
            groups[fact.id] = "changed"
            after.append(Fact(fact.id, fact.kind, fact.name, _value(fact.kind, rng, values)))
        else:
            groups[fact.id] = "unchanged"
            after.append(fact)
    for index in range(args.facts, args.facts + args.added):
        kind = SHAPES[index % len(SHAPES)][0]
        fact = Fact(f"fact-{index:03d}", kind, _name(rng, names), _value(kind, rng, values))
        groups[fact.id] = "added"
        after.append(fact)
    return before, after, groups


def write_documents(facts: list[Fact], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"id": fact.id, "text": fact.text, "metadata": {"title": fact.name}}) for fact in facts]
    path.write_text("\n".join(lines) + "\n")


def ask(catalog, store, kb, model, questions: list[str], adapter, settings) -> list[str]:
    """Each question's answer through the serving path (prepare_chat as /v1/chat/completions builds it)."""
    from kadapt.served import answer_all
    from kadapt.serving import chat_params, prepare_chat

    params = chat_params(settings)  # no max_tokens, no stop: the served default (one line)
    prepared = [
        prepare_chat(catalog, store, kb, model, [{"role": "user", "content": question}], settings,
                     max_tokens=params.max_tokens, adapter=adapter)
        for question in questions
    ]  # fmt: skip
    completions = asyncio.run(answer_all(model, prepared, params, settings.max_batch_size, None))
    return [completion.text for completion in completions]


def judge(fact_before: Fact | None, fact_after: Fact | None, group: str, answer: str, others: list[str]) -> bool:
    from kadapt.judge import StringJudge

    string = StringJudge()
    if group == "deleted":
        return not string.judge(answer, accepted=[fact_before.value], distractors=[]).correct
    distractors = [value for value in others if value != fact_after.value]
    if group == "changed":
        distractors.append(fact_before.value)
    return string.judge(answer, accepted=[fact_after.value], distractors=distractors).correct


def verdicts(before, after, groups, answers: dict[str, str]) -> dict[str, bool]:
    """Each answered fact's verdict (fact id -> right)."""
    old = {fact.id: fact for fact in before}
    new = {fact.id: fact for fact in after}
    right = {}
    for fact_id, answer in answers.items():
        group = groups[fact_id]
        fact = new.get(fact_id) or old[fact_id]
        others = [other.value for other in (after if group != "deleted" else before) if other.kind == fact.kind]
        right[fact_id] = judge(old.get(fact_id), new.get(fact_id), group, answer, others)
    return right


def score(groups, right: dict[str, bool]) -> dict[str, dict]:
    """Each group's accuracy with its interval, from the facts' verdicts."""
    from kadapt.evaluate import proportion

    hits: dict[str, list[bool]] = {}
    for fact_id, verdict in right.items():
        hits.setdefault(groups[fact_id], []).append(verdict)
    return {group: proportion(sum(row), len(row)) for group, row in sorted(hits.items())}


def paired_verdicts(result: dict, mode: str, reference: str, group: str) -> list[tuple[bool, bool]]:
    """(``mode`` right, ``reference`` right) per fact of ``group`` both were asked, from the verdicts kept with the
    answers. A run stored before they were kept has its answers judged again (by the judge as it is now), its facts
    drawn again from its seed; [] when they no longer match its questions. The stored run is left as it is."""
    found: dict[str, dict[str, bool]] = {}
    for name in (mode, reference):
        rows = [row for row in result.get("answers", {}).get(name, []) if row["group"] == group]
        found[name] = {row["fact"]: row["correct"] for row in rows if "correct" in row}
        missing = {row["fact"]: row for row in rows if "correct" not in row}
        if missing:
            before, after, groups = build_facts(argparse.Namespace(**result["args"]), _seed_of(result))
            facts = {fact.id: fact for fact in before + after}
            if any(fact_id not in facts or facts[fact_id].question != row["question"] for fact_id, row in
                   missing.items()):  # fmt: skip
                return []
            answers = {fact_id: row["answer"] for fact_id, row in missing.items()}
            found[name] |= verdicts(before, after, groups, answers)
    ours, theirs = found[mode], found[reference]
    return [(ours[fact], theirs[fact]) for fact in sorted(ours.keys() & theirs.keys())]


def difference_interval(pairs: list[tuple[bool, bool]]) -> dict | None:
    """The difference of two accuracies on the same facts (``pairs``: each fact's (first right, second right)) and
    its 95% interval: Newcombe's score interval for paired proportions (Statistics in Medicine 1998, method 10),
    built from each accuracy's Wilson interval and the pairs' correlation. Facts count as independent (each seed's
    come from one training: the interval is, if anything, narrow). None without a fact."""
    from kadapt.evaluate import wilson

    n = len(pairs)
    if not n:
        return None
    both = sum(1 for first, second in pairs if first and second)
    first_only = sum(1 for first, second in pairs if first and not second)
    second_only = sum(1 for first, second in pairs if second and not first)
    neither = n - both - first_only - second_only
    p1, p2 = (both + first_only) / n, (both + second_only) / n
    (l1, u1), (l2, u2) = wilson(both + first_only, n), wilson(both + second_only, n)
    spread = (both + first_only) * (second_only + neither) * (both + second_only) * (first_only + neither)
    # the pairs' correlation, a positive one continuity-corrected (less n/2, not below 0), as Newcombe does
    # (worked in Altman et al., Statistics with Confidence, 2000): otherwise facts all answered alike would make
    # the interval a point
    association = both * neither - first_only * second_only
    association = max(0.0, association - n / 2) if association > 0 else association
    phi = association / math.sqrt(spread) if spread else 0.0
    difference = p1 - p2
    low = difference - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    high = difference + math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return {"difference": difference, "low": max(-1.0, low), "high": min(1.0, high)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--facts", type=int, default=24, help="facts (one document each) before the change")
    parser.add_argument("--changed", type=int, default=6, help="facts whose value is edited")
    parser.add_argument("--deleted", type=int, default=3, help="documents deleted")
    parser.add_argument("--added", type=int, default=6, help="documents added")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default KADAPT_ADAPT_EPOCHS)")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default KADAPT_ADAPT_LEARNING_RATE)")
    parser.add_argument("--warm-lr", type=float, default=None, help="learning rate of the warm start (default: --lr)")
    parser.add_argument(
        "--warm",
        default=None,
        help="warm starts to compare, each trained from the same adapter: comma-separated EPOCHSxPASSES "
        "(KADAPT_WARM_START_EPOCHS x KADAPT_WARM_START_CHANGED_PASSES), optionally rSHARE (KADAPT_WARM_START_REPLAY), "
        "s (KADAPT_WARM_START_SPREAD: an epoch per pass over the changed documents) "
        "and @LR (the warm start's learning rate, else --warm-lr), e.g. 6x12,5x10r0.8,5x10s,5x10@5e-3 "
        "(default: the settings')",
    )
    parser.add_argument(
        "--trainings-only", action="store_true",
        help="ask only the adapters trained (before, warm starts, full retrain): icl, ft stale and ft + delta are "
        "skipped, with their targets (about 2.5 minutes a seed less on 2 cores)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", default=None, help="comma-separated seeds, one run each, pooled (default: --seed)")
    parser.add_argument(
        "--show", type=Path, nargs="+", default=None,
        help="print a stored results.json and exit; several (e.g. results-seed-*.json): pooled",
    )  # fmt: skip
    args = parser.parse_args()
    if args.show is not None:
        stored = [json.loads(path.read_text()) for path in args.show]
        print_all(stored[0] if len(stored) == 1 else pool(stored))
        return
    try:
        args.warm_variants = warm_variants(args.warm)
        seeds = _seeds(args.seeds) if args.seeds else [args.seed]
    except ValueError as error:
        parser.error(str(error))
    if args.changed + args.deleted > args.facts or min(args.facts, args.changed, args.deleted, args.added) < 0:
        parser.error("--changed + --deleted must not pass --facts, and every count is 0 or more")
    shutil.rmtree(DATA / "data", ignore_errors=True)
    os.environ.setdefault("KADAPT_MODELS_DIR", str(REPO / ".kadapt" / "models"))
    os.environ.setdefault("KADAPT_DATA_DIR", str(DATA / "data"))
    os.environ.setdefault("KADAPT_ALLOWED_ROOTS", str(FILES))
    runs = []
    DATA.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        _log(f"seed {seed} ({len(runs) + 1} of {len(seeds)})")
        runs.append(run(args, seed))
        # each seed's run as it ends: a long benchmark stopped early keeps what it measured
        (DATA / f"results-seed-{seed}.json").write_text(json.dumps(runs[-1], indent=2, default=str))
    results = runs[0] if len(runs) == 1 else pool(runs)
    (DATA / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print_all(results)
    print(f"\nwritten: {DATA / 'results.json'}")


def _seeds(text: str) -> list[int]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items or not all(item.isdigit() for item in items) or len(set(items)) != len(items):
        raise ValueError(f"--seeds: {text!r} is not distinct whole numbers separated by commas, e.g. 0,1,2")
    return [int(item) for item in items]


def pool(runs: list[dict]) -> dict:
    """The runs' groups pooled (correct and n summed per mode and group, for the modes every run has) and their
    training seconds summed; the targets checked on the pooled figures. Each run is kept under ``runs``."""
    from kadapt.evaluate import proportion

    # runs stored with other warm starts compared: the modes they all have, in the first run's order
    modes = [mode for mode in runs[0]["groups"] if all(mode in result["groups"] for result in runs)]
    groups: dict[str, dict[str, dict]] = {mode: {} for mode in modes}
    timings: dict[str, dict] = {}
    for result in runs:
        for mode in modes:
            for group, row in result["groups"][mode].items():
                total = groups[mode].setdefault(group, {"correct": 0, "n": 0})
                total["correct"] += row["correct"]
                total["n"] += row["n"]
            for key, value in result["timings"].get(mode, {}).items():
                if key in ("training_seconds", "trained_tokens") and value is not None:
                    total = timings.setdefault(mode, {})
                    total[key] = round(total.get(key, 0) + value, 1)
    for mode in timings:  # trained tokens only where every run recorded them
        if any("trained_tokens" not in result["timings"].get(mode, {}) for result in runs):
            timings[mode].pop("trained_tokens", None)
    pooled = {
        "groups": {mode: {group: proportion(row["correct"], row["n"]) for group, row in rows.items()}
                   for mode, rows in groups.items()},
        "timings": timings,
    }  # fmt: skip
    return pooled | {"targets": targets(pooled, runs), "seeds": [_seed_of(result) for result in runs], "runs": runs}


def _seed_of(result: dict) -> int:
    return result["seed"] if "seed" in result else result["args"]["seed"]  # before --seeds: in its args


def print_all(results: dict) -> None:
    for result in results.get("runs", []):
        print(f"\n## seed {_seed_of(result)}")
        print_results(result)
    if "runs" in results:
        print(f"\n## pooled over seeds {', '.join(str(seed) for seed in results['seeds'])}")
    print_results(results)


def warm_variants(text: str | None) -> list[tuple[str, dict, float | None]]:
    """[(mode name, settings update, learning rate or None)] of ``--warm`` (EPOCHSxPASSES, optionally rSHARE: the
    share of unchanged documents replayed, and @LR: the warm start's learning rate); [] for the settings' own (one
    warm start)."""
    variants = []
    for item in (text or "").split(","):
        if not (item := item.strip()):
            continue
        spec, _, rate = item.partition("@")
        spread = spec.endswith("s")
        shape, _, share = spec.removesuffix("s").partition("r")
        epochs, _, passes = shape.partition("x")
        try:
            replay = float(share) if share else None
            lr = float(rate) if rate else None
            numbers_ok = (replay is None or 0 <= replay <= 1) and (lr is None or 0 < lr < 1)
        except ValueError:
            numbers_ok = False
        if not (epochs.isdigit() and passes.isdigit() and int(epochs) > 0 and int(passes) > 0 and numbers_ok):
            raise ValueError(
                f"{item!r} is not EPOCHSxPASSES[rSHARE][s][@LR] (two whole numbers above 0, then optionally a share "
                "of the unchanged documents replayed, 0 to 1, s for an epoch per pass over the changed documents, "
                "and a learning rate; e.g. 6x12, 5x10r0.8, 5x10s or 5x10@5e-3)"
            )
        update = {"warm_start_epochs": int(epochs), "warm_start_changed_passes": int(passes)}
        update |= {"warm_start_replay": replay} if share else {}
        variants.append((f"ft warm {item}", update | {"warm_start_spread": spread}, lr))
    return variants


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(args, seed: int) -> dict:
    """One benchmark run on KB ``fresh-SEED``: its facts and its trainings drawn from ``seed``."""
    from kadapt.activation import set_mode
    from kadapt.adapters import new_adapter_id, train_kb
    from kadapt.catalog import Adapter, open_catalog
    from kadapt.kbs import add_source, create_kb, get_kb
    from kadapt.models import get_model_pool
    from kadapt.settings import get_settings
    from kadapt.store import get_store
    from kadapt.sync import sync_kb

    settings = get_settings()
    catalog, store = open_catalog(settings), get_store(settings)
    slug = f"fresh-{seed}"
    before, after, groups = build_facts(args, seed)
    documents = FILES / f"documents-{seed}.jsonl"
    write_documents(before, documents)
    create_kb(catalog, slug, title=f"Facts (seed {seed})")
    add_source(catalog, settings, slug, "jsonl", {"path": str(documents)})
    sync_kb(catalog, slug)
    train = {"epochs": args.epochs or settings.adapt_epochs, "learning_rate": args.lr or settings.adapt_learning_rate}
    train |= {"seed": seed}
    timings, results = {}, {"args": vars(args), "seed": seed, "train": train, "groups": {}}
    _log(f"training ft on {len(before)} facts ...")
    first = new_adapter_id()
    started = time.perf_counter()
    trained = train_kb(catalog, slug, "ft", adapter_id=first, config=train)
    timings["ft before"] = {
        "wall_seconds": round(time.perf_counter() - started, 1),
        "training_seconds": trained["seconds"],
    }
    set_mode(catalog, slug, "ft", first)
    kb = get_kb(catalog, slug)
    model = get_model_pool().get(kb.base_model)
    with catalog.session() as session:
        first_row = session.get(Adapter, first)

    def asked(mode: str, facts: list[Fact], adapter, mode_settings=None) -> None:
        _log(f"asking {len(facts)} questions: {mode} ...")
        started = time.perf_counter()
        texts = ask(catalog, store, get_kb(catalog, slug), model, [f.question for f in facts], adapter,
                    mode_settings or settings)  # fmt: skip
        answers = dict(zip([fact.id for fact in facts], texts, strict=True))
        right = verdicts(before, after, groups, answers)
        results["groups"][mode] = score(groups, right)
        results.setdefault("answers", {})[mode] = [
            {"fact": fact.id, "group": groups[fact.id], "question": fact.question, "answer": answers[fact.id],
             "correct": right[fact.id]}
            for fact in facts
        ]  # fmt: skip
        timings.setdefault(mode, {})["answer_seconds"] = round(time.perf_counter() - started, 1)

    # before the change: the adapter on its own snapshot, asked the facts that will not change (their baseline)
    asked("ft before", [fact for fact in before if groups[fact.id] == "unchanged"], first_row)
    write_documents(after, documents)
    stats = sync_kb(catalog, slug)
    _log(f"synced the change: {stats.updated} updated, {stats.added} added, {stats.deleted} deleted")
    current = {fact.id for fact in after}
    asked_facts = after + [fact for fact in before if fact.id not in current]  # deleted ones asked too
    if not args.trainings_only:
        asked("icl", asked_facts, None)
        asked("ft stale", asked_facts, first_row, settings.model_copy(update={"delta_icl": False}))
        asked("ft + delta", asked_facts, first_row)
    for mode, update, rate in (args.warm_variants or [("ft warm", {}, None)]) + [("ft full", None, None)]:
        _log(f"training {mode} ...")
        adapter_id, warm = new_adapter_id(), update is not None
        started = time.perf_counter()
        rate = rate or (args.warm_lr if warm else None)
        config = train | ({"learning_rate": rate} if rate else {})
        trained = train_kb(catalog, slug, "ft", adapter_id=adapter_id, config=config, warm_start=warm,
                           settings=settings.model_copy(update=update or {}))  # fmt: skip
        timings[mode] = {
            "wall_seconds": round(time.perf_counter() - started, 1),
            "training_seconds": trained["seconds"],
            # the compute, which the seconds are on a steady machine (one full retrain ran at 184-406 tokens/s)
            "trained_tokens": round(trained["tokens_per_second"] * trained["seconds"]),
            "examples": trained["examples"],
            "warm_start": trained.get("warm_start"),
        }
        with catalog.session() as session:
            row = session.get(Adapter, adapter_id)
        asked(mode, asked_facts, row)
    results["timings"] = timings
    results["targets"] = targets(results)
    return results


def targets(results: dict, runs: list[dict] | None = None) -> dict:
    """The targets checked on ``results`` (one run's, or ``runs`` pooled). A warm start's comparison with
    the full retrain also gives the paired difference per group with its 95% interval over ``runs`` (or this run's
    facts), and whether that interval settles the 5-point margin either way."""
    groups, timings = results["groups"], results["timings"]
    runs = runs if runs is not None else [results]

    def accuracy(mode: str, group: str) -> float | None:
        row = groups.get(mode, {}).get(group)
        return row["accuracy"] if row else None

    checks = {}
    for group in ("changed", "added"):
        delta, icl = accuracy("ft + delta", group), accuracy("icl", group)
        if delta is not None and icl is not None:
            checks[f"delta {group} >= icl {group}"] = {"delta": delta, "icl": icl, "met": delta >= icl}
    unchanged, before = accuracy("ft + delta", "unchanged"), accuracy("ft before", "unchanged")
    if unchanged is not None and before is not None:
        checks["delta unchanged within 5 points of before"] = {
            "delta": unchanged, "before": before, "met": unchanged >= before - 0.05
        }  # fmt: skip
    full_time = timings["ft full"]["training_seconds"]
    for mode in (name for name in groups if name.startswith("ft warm")):
        for group in ("changed", "deleted", "added", "unchanged"):
            warm, full = accuracy(mode, group), accuracy("ft full", group)
            if warm is not None and full is not None:
                pairs = [pair for run in runs for pair in paired_verdicts(run, mode, "ft full", group)]
                checks[f"{mode}: {group} within 5 points of full"] = {
                    "warm": warm, "full": full, "met": warm >= full - 0.05
                } | _settled(pairs)  # fmt: skip
        warm_time = timings[mode]["training_seconds"]
        checks[f"{mode}: training <= 30% of full"] = {
            "ratio": round(warm_time / full_time, 3) if full_time else None,
            "met": bool(full_time) and warm_time <= 0.3 * full_time,
        } | _token_ratio(timings[mode], timings["ft full"])
    return checks


def _settled(pairs: list[tuple[bool, bool]]) -> dict:
    """The paired difference's interval and what it settles: "within" when its low end is above -5 points,
    "short" when its high end is below, else "unsettled" (the facts are too few to tell)."""
    interval = difference_interval(pairs)
    if interval is None:
        return {}
    verdict = "within" if interval["low"] > -0.05 else "short" if interval["high"] < -0.05 else "unsettled"
    return {"paired": {key: round(value, 3) for key, value in interval.items()}, "settled": verdict}


def _token_ratio(warm: dict, full: dict) -> dict:
    """{"tokens_ratio": the warm start's trained tokens over the full retrain's} where both were recorded (told
    beside the time ratio, which the training's speed moves from run to run; not a target)."""
    if warm.get("trained_tokens") and full.get("trained_tokens"):
        return {"tokens_ratio": round(warm["trained_tokens"] / full["trained_tokens"], 3)}
    return {}


def print_results(results: dict) -> None:
    groups = ("changed", "deleted", "added", "unchanged")
    print("\n| mode | " + " | ".join(groups) + " | training s | trained tokens |")
    print("|---|" + "---|" * (len(groups) + 2))
    for mode, rows in results["groups"].items():
        cells = []
        for group in groups:
            row = rows.get(group)
            cells.append(
                f"{row['accuracy']:.2f} [{row['low']:.2f}-{row['high']:.2f}] {row['correct']}/{row['n']}"
                if row
                else "-"
            )
        timing = results["timings"].get(mode, {})
        figures = [timing.get(key) for key in ("training_seconds", "trained_tokens")]
        cells += ["-" if figure is None else f"{figure:,}" for figure in figures]
        print(f"| {mode} | " + " | ".join(cells) + " |")
    print("\nTargets:")
    for name, check in results["targets"].items():
        figures = json.dumps({key: value for key, value in check.items() if key != "met"})
        print(f"- {name}: {'met' if check['met'] else 'NOT met'} {figures}")
    print_kept(results)


def print_kept(results: dict) -> None:
    """Each warm start against the adapter it continued, on the unchanged facts (paired, 95% interval): what it
    forgot. Beside the targets, not one: the full retrain is a new training, whose luck on the unchanged facts
    the warm start does not share (it keeps its parent's)."""
    runs = results.get("runs", [results])
    lines = []
    for mode in (name for name in results["groups"] if name.startswith("ft warm")):
        pairs = [pair for run in runs for pair in paired_verdicts(run, mode, "ft before", "unchanged")]
        if interval := difference_interval(pairs):
            kept, before = sum(first for first, _ in pairs), sum(second for _, second in pairs)
            figures = {key: round(value, 3) for key, value in interval.items()}
            lines.append(
                f"- {mode}: {kept}/{len(pairs)} against its parent's {before}/{len(pairs)} {json.dumps(figures)}"
            )
    if lines:
        print("\nUnchanged facts, warm start against the adapter it continued (paired; not a target):")
        print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
