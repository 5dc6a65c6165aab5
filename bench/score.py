"""Multiple-choice scoring throughput: tree-packed ``score_batch`` vs one forward per choice.

    .venv/bin/python bench/score.py [--items 48] [--choices 4] [--context-docs 80] [--icl-baseline-items 4]

Probe items are cloze questions on synthetic comparative facts ("Femp are less dangerous than") with
nonsense-word choices (" glon."), in two workloads: the question alone (short prompts), and the question
after a block of reference documents listing the facts, the same block for every item (as icl mode puts
the whole KB before each question). Measured in one run, items/s of:

  (a) baseline: one unbatched forward per (prompt + choice);
  (b) ``score_choices`` per item: one padded forward per item;
  (c) ``score_batch`` over all items: shared prefix once, items packed as token trees.

(a) and (b) with documents are slow (a forward of the whole block per choice), so they run on the first
``--icl-baseline-items`` items only. (c) is checked against (a) on the items both scored; target: (c) >= 5x (a).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET = 5.0


def build_items(facts, count: int, choices: int, context: str) -> list[tuple[str, list[str]]]:
    """Cloze items: the subject and relation, the right object among objects of other facts (shuffled)."""
    rng = random.Random(11)
    objects = [fact.object for fact in facts]
    items = []
    for fact in facts[:count]:
        wrong = rng.sample([word for word in objects if word != fact.object], choices - 1)
        options = [fact.object, *wrong]
        rng.shuffle(options)
        items.append((f"{context}{fact.subject.capitalize()} are {fact.relation}", [f" {word}." for word in options]))
    return items


def score_one_choice(model, prompt: str, choice: str) -> float:
    """The baseline: one forward of prompt + choice, full-vocabulary log-softmax, summed over the choice."""
    import torch

    prompt_ids = model.tokenizer(prompt, add_special_tokens=False).input_ids
    choice_ids = model.tokenizer(choice, add_special_tokens=False).input_ids
    input_ids = torch.tensor([prompt_ids + choice_ids], device=model.device)
    with model.compute_lock, torch.inference_mode():
        logits = model.model(input_ids=input_ids).logits.float()
    log_probs = torch.log_softmax(logits[0, :-1], dim=-1)
    token_scores = log_probs.gather(-1, input_ids[0, 1:, None]).squeeze(-1)
    return float(token_scores[len(prompt_ids) - 1 :].sum())


def timed(function):
    started = time.perf_counter()
    result = function()
    return result, time.perf_counter() - started


def run_workload(name: str, model, items, baseline_count: int, row_tokens: int) -> float:
    tokenizer = model.tokenizer
    prompt_tokens = sum(len(tokenizer(prompt, add_special_tokens=False).input_ids) for prompt, _ in items) / len(items)
    subset = items[:baseline_count]
    print(
        f"\n{name}: {len(items)} items x {len(items[0][1])} choices, prompts of {prompt_tokens:.0f} tokens on average"
    )
    baseline, seconds_a = timed(lambda: [[score_one_choice(model, p, c) for c in choices] for p, choices in subset])
    _, seconds_b = timed(lambda: [model.score_choices(p, choices) for p, choices in subset])
    batched, seconds_c = timed(lambda: model.score_batch(items, row_tokens=row_tokens))
    rate_a, rate_b, rate_c = len(subset) / seconds_a, len(subset) / seconds_b, len(items) / seconds_c
    on = "" if len(subset) == len(items) else f", on the first {len(subset)} items"
    print(f"  (a) one forward per choice:    {rate_a:7.2f} items/s ({seconds_a:.1f} s{on})")
    print(f"  (b) score_choices per item:    {rate_b:7.2f} items/s ({seconds_b:.1f} s{on})")
    print(f"  (c) score_batch, all items:    {rate_c:7.2f} items/s ({seconds_c:.1f} s, row_tokens={row_tokens})")
    pairs = list(zip(baseline, batched[: len(subset)], strict=True))
    difference = max(abs(x - y) for want, got in pairs for x, y in zip(want, got, strict=True))
    agree = sum(
        max(range(len(want)), key=want.__getitem__) == max(range(len(got)), key=got.__getitem__) for want, got in pairs
    )
    print(f"  (c) vs (a): max abs difference {difference:.2e} nats; same pick on {agree} of {len(subset)} items")
    ratio = rate_c / rate_a
    print(f"  ratio (c) / (a): {ratio:.1f}x (target >= {TARGET:g}x: {'met' if ratio >= TARGET else 'MISSED'})")
    print(f"  ratio (c) / (b): {rate_c / rate_b:.1f}x")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=48)
    parser.add_argument("--choices", type=int, default=4)
    parser.add_argument("--context-docs", type=int, default=80, help="facts in the shared documents block")
    parser.add_argument("--icl-baseline-items", type=int, default=4, help="items (a) and (b) score with documents")
    parser.add_argument("--row-tokens", type=int, default=2048)
    args = parser.parse_args()
    os.environ.setdefault("KADAPT_MODELS_DIR", str(REPO / ".kadapt" / "models"))
    os.environ.setdefault("KADAPT_DATA_DIR", str(REPO / ".kadapt" / "bench"))
    import torch

    from kadapt.models import get_model_pool
    from kadapt.synthetic import comparative_facts

    facts = comparative_facts(max(args.items, args.context_docs, args.choices), seed=3)
    documents = "Reference documents:\n\n" + "\n".join(fact.text for fact in facts[: args.context_docs]) + "\n\n"
    short = build_items(facts, args.items, args.choices, "")
    with_documents = build_items(facts, args.items, args.choices, documents)
    model = get_model_pool().get("smollm2-135m")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"model smollm2-135m on {device}, {torch.get_num_threads()} torch threads ({os.cpu_count()} CPU cores)")
    model.score_batch(short[:2])  # warm-up
    score_one_choice(model, short[0][0], short[0][1][0])
    model.score_choices(*short[0])

    ratios = [
        run_workload("short prompts", model, short, len(short), args.row_tokens),
        run_workload("shared documents block", model, with_documents, args.icl_baseline_items, args.row_tokens),
    ]
    print(f"\ntarget (c) >= {TARGET:g}x (a) on both workloads: {'met' if min(ratios) >= TARGET else 'MISSED'}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
