"""bf16 against fp32 for the embedded model's three kinds of work, measured in one run on this machine.

    .venv/bin/python bench/precision.py [--items 64] [--answers 8] [--steps 6]

- scoring: ``score_batch`` over the biography probes (samples/biographies), each after the 34 biographies, as the
  pilot scores icl (prefill-bound);
- generation: greedy chat answers to the biographies' questions with their document in the prompt, as icl serves;
- training: LoRA steps (r=16, all linear layers) on the biographies with kadapt's packed trainer.

Each runs under ``KADAPT_PRECISION=fp32`` and ``=bf16`` (forced, whatever the CPU has: see the first line printed)
and prints tokens/s of both, the ratio, and what the two agree on: MC picks, judged answers, the loss curve.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples" / "biographies"


def lines(name: str) -> list[dict]:
    return [json.loads(line) for line in (SAMPLES / name).read_text().splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=64, help="probes scored (each after all 34 biographies)")
    parser.add_argument("--answers", type=int, default=8, help="chat questions answered")
    parser.add_argument("--steps", type=int, default=6, help="LoRA training steps")
    args = parser.parse_args()
    os.environ.setdefault("KADAPT_MODELS_DIR", str(REPO / ".kadapt" / "models"))

    import torch

    from kadapt.judge import StringJudge
    from kadapt.models.base import GenerationParams
    from kadapt.models.precision import cpu_has_bf16
    from kadapt.prompts import SYSTEM_PROMPT
    from kadapt.settings import get_settings
    from kadapt.training import TrainConfig, train_lora
    from kadapt_transformers._loading import resolve_model_path
    from kadapt_transformers.engine import TransformersModel

    print(f"CPU bf16 instructions: {'yes' if cpu_has_bf16() else 'no (bf16 is emulated)'}; torch {torch.__version__}")
    base = resolve_model_path("smollm2-135m", Path(os.environ["KADAPT_MODELS_DIR"]))
    documents = {row["id"]: row["text"] for row in lines("documents.jsonl")}
    probes = lines("probes.jsonl")
    block = "Reference documents:\n" + "\n".join(documents.values()) + "\n\n"
    items = [(block + p["question"], [" " + c for c in p["choices"]]) for p in probes][: args.items]
    asked = [p for p in probes if p.get("chat_question")][: args.answers]
    conversations = [
        [
            {"role": "system", "content": f"{SYSTEM_PROMPT}\n\nDocuments:\n{documents[p['source_ids'][0]]}"},
            {"role": "user", "content": p["chat_question"]},
        ]
        for p in asked
    ]
    judge = StringJudge()
    rows: dict[str, dict] = {}
    for precision in ("fp32", "bf16"):
        engine = TransformersModel(base, "smollm2-135m", precision=precision)
        engine.score_batch(items[:2])  # warm-up
        started = time.perf_counter()
        scores = engine.score_batch(items)
        scoring = time.perf_counter() - started
        tokens = sum(len(engine.tokenizer(prompt + "".join(c)).input_ids) for prompt, c in items)
        started = time.perf_counter()
        answers = engine.generate_batch(conversations, GenerationParams(max_tokens=32))
        generation = time.perf_counter() - started
        engine.close()
        right = [
            judge.judge(
                a.text,
                accepted=p["answers"],
                distractors=[c for i, c in enumerate(p["choices"]) if i != p["answer_index"]],
            ).correct
            for p, a in zip(asked, answers, strict=True)
        ]
        os.environ["KADAPT_PRECISION"] = precision
        get_settings.cache_clear()
        texts = list(documents.values())
        config = TrainConfig(rank=16, alpha=32, epochs=100, max_steps=args.steps, row_tokens=256, rows_per_step=4)
        with tempfile.TemporaryDirectory() as work:
            trained = train_lora(base, texts, Path(work) / "out", config, work_dir=Path(work) / "work")
        rows[precision] = {
            "scoring_tokens_per_second": tokens / scoring,
            "picks": [row.index(max(row)) for row in scores],
            "generated_tokens_per_second": sum(a.completion_tokens for a in answers) / generation,
            "right": sum(right),
            "training_tokens_per_second": trained.tokens_per_second,
            "loss_curve": trained.loss_curve,
        }
    fp32, bf16 = rows["fp32"], rows["bf16"]
    print("| work | fp32 tok/s | bf16 tok/s | bf16 / fp32 |\n|---|---|---|---|")
    work = [
        ("scoring (prefill)", "scoring_tokens_per_second"),
        ("generation", "generated_tokens_per_second"),
        ("LoRA training", "training_tokens_per_second"),
    ]
    for label, key in work:
        print(f"| {label} | {fp32[key]:.0f} | {bf16[key]:.0f} | {bf16[key] / fp32[key]:.2f}x |")
    same = sum(a == b for a, b in zip(fp32["picks"], bf16["picks"], strict=True))
    print(f"MC picks agree on {same}/{len(items)} probes ({same / len(items):.1%}; target >= 98%)")
    print(f"judged chat answers right: fp32 {fp32['right']}/{len(asked)}, bf16 {bf16['right']}/{len(asked)}")
    worst = max(abs(a - b) / a for a, b in zip(fp32["loss_curve"], bf16["loss_curve"], strict=True))
    print(f"training loss: largest relative difference per step {worst:.2%} (tests allow 5%)")


if __name__ == "__main__":
    sys.exit(main())
