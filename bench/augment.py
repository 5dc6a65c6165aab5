"""Augmentation: batched vs sequential generation throughput, and how often generated reversals are right.

    .venv/bin/python bench/augment.py [--facts 40] [--prompts 16]

1. Generation tokens/s for --prompts few-shot reversal prompts, one at a time vs one batched call, with the
   embedded model (target: batched >= 4x sequential).
2. The `local` augmenter on a synthetic KB of comparative facts with nonsense words ("Femp are larger than
   glon."), whose correct reversal is known ("Glon are smaller than femp."): the share of reversals that pass
   the filters and are correct, and the share of facts that get at least one correct reversal.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--facts", type=int, default=40)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    os.environ.setdefault("KADAPT_MODELS_DIR", str(REPO / ".kadapt" / "models"))
    os.environ.setdefault("KADAPT_DATA_DIR", str(REPO / ".kadapt" / "bench"))
    from kadapt.augment import AugmentContext, SourceDocument
    from kadapt.models import GenerationParams, get_model_pool
    from kadapt.settings import get_settings
    from kadapt.synthetic import comparative_facts, is_correct_reversal
    from kadapt_augmenters import LocalRewrite, reversal_prompt

    model = get_model_pool().get("smollm2-135m")
    facts = comparative_facts(args.facts, seed=7)
    conversations = [reversal_prompt(fact.text) for fact in facts[: args.prompts]]
    params = GenerationParams(max_tokens=args.max_tokens)
    model.generate_batch(conversations[:1], params)  # warm-up

    started = time.perf_counter()
    sequential = [model.generate_batch([conversation], params)[0] for conversation in conversations]
    sequential_seconds = time.perf_counter() - started
    started = time.perf_counter()
    batched = model.generate_batch(conversations, params)
    batched_seconds = time.perf_counter() - started
    sequential_rate = sum(c.completion_tokens for c in sequential) / sequential_seconds
    batched_rate = sum(c.completion_tokens for c in batched) / batched_seconds
    ratio = batched_rate / sequential_rate
    print(f"generation, {len(conversations)} prompts, max_tokens={args.max_tokens}, {os.cpu_count()} CPU cores")
    print(f"  sequential: {sequential_rate:7.1f} tok/s ({sequential_seconds:.1f} s)")
    print(f"  batched:    {batched_rate:7.1f} tok/s ({batched_seconds:.1f} s)")
    print(f"  ratio batched / sequential: {ratio:.2f}x (target >= 4x: {'met' if ratio >= 4 else 'MISSED'})")

    augmenter = LocalRewrite()
    documents = [
        SourceDocument(f"fact-{index}", f"Fact {index}", f"fact-{index}", fact.text, str(index))
        for index, fact in enumerate(facts)
    ]
    context = AugmentContext(
        kb=None, documents=documents, settings=get_settings(), model_spec="smollm2-135m", _model=model
    )
    started = time.perf_counter()
    drafts = [draft for draft in augmenter.augment(documents, context) if draft.kind == "reversal"]
    seconds = time.perf_counter() - started
    by_fact: dict[str, list[str]] = {}
    for draft in drafts:
        if draft.text:
            by_fact.setdefault(draft.source_ids[0], []).append(draft.text)
    kept = [
        (fact, text) for document, fact in zip(documents, facts, strict=True) for text in by_fact.get(document.id, [])
    ]
    correct = [pair for pair in kept if is_correct_reversal(*pair)]
    covered = sum(
        any(is_correct_reversal(fact, text) for text in by_fact.get(document.id, []))
        for document, fact in zip(documents, facts, strict=True)
    )
    candidates = len(drafts)
    print(
        f"\nlocal augmenter on {len(facts)} synthetic comparative facts ({seconds:.1f} s, "
        f"{candidates} reversal candidates: greedy + {augmenter.samples} sampled per fact)"
    )
    print(f"  kept by the filters:        {len(kept)} ({len(kept) / candidates:.0%} of candidates)")
    print(f"  correct among kept:         {len(correct)} ({len(correct) / max(1, len(kept)):.0%})")
    print(f"  facts with a correct one:   {covered} of {len(facts)} ({covered / len(facts):.0%})")
    for fact, text in kept[:6]:
        print(f"    {'ok ' if is_correct_reversal(fact, text) else 'BAD'} {fact.text!r} -> {text!r}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
