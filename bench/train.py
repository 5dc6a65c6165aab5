"""Training throughput: kadapt's packed LoRA trainer vs HF Trainer + PEFT with its default data collator.

    .venv/bin/python bench/train.py [--steps 6] [--hf-batch 8] [--rows-per-step 4] [--row-tokens 256]

Same model (SmolLM2-135M-Instruct), same data (the sample handbook's documents plus their sentences, the
shape of aug-ft data: a few long documents and many short examples), same LoRA config (r=16 on all linear
layers), same number of optimizer steps, measured in one run. Prints effective (non-padding) tokens/s of
each and the ratio; target >= 2x. Runs on CUDA when available.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def load_texts() -> list[str]:
    from kadapt.parsing import parse_bytes
    from kadapt.text import sentences

    texts = []
    for path in sorted((REPO / "samples" / "handbook").rglob("*")):
        if path.is_file():
            document = parse_bytes(path.read_bytes(), path.name).text
            texts.append(document)
            texts.extend(sentences(document))
    return texts


def run_hf(base: str, texts: list[str], steps: int, batch: int, max_len: int, rank: int) -> tuple[float, int]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainingArguments,
    )

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(
        base, dtype=torch.bfloat16 if torch.cuda.is_available() else torch.float32
    )
    model = get_peft_model(
        model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear", task_type="CAUSAL_LM")
    )
    dataset = [{"input_ids": (tokenizer(text).input_ids + [tokenizer.eos_token_id])[:max_len]} for text in texts]
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    real = {"tokens": 0}

    def counting(features):
        out = collator(features)
        real["tokens"] += int(out["attention_mask"].sum())
        return out

    with tempfile.TemporaryDirectory() as output:
        args = TrainingArguments(
            output_dir=output,
            per_device_train_batch_size=batch,
            max_steps=steps,
            learning_rate=1e-3,
            logging_steps=10_000,
            save_strategy="no",
            report_to=[],
            dataloader_num_workers=0,
            seed=0,
            disable_tqdm=True,
        )
        trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=counting)
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
    return real["tokens"] / seconds, real["tokens"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--hf-batch", type=int, default=8, help="examples per step for HF Trainer")
    parser.add_argument("--rows-per-step", type=int, default=4, help="packed rows per step for kadapt")
    parser.add_argument("--row-tokens", type=int, default=256)
    parser.add_argument("--rank", type=int, default=16)
    args = parser.parse_args()
    os.environ.setdefault("KADAPT_MODELS_DIR", str(REPO / ".kadapt" / "models"))
    import torch

    from kadapt.settings import get_settings
    from kadapt.training import TrainConfig, train_lora
    from kadapt_transformers._loading import resolve_model_path

    base = resolve_model_path("smollm2-135m", get_settings().effective_models_dir)
    texts = load_texts()
    device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    print(f"data: {len(texts)} examples (documents + sentences); {args.steps} steps each; device {device}")
    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(
            rank=args.rank,
            alpha=2 * args.rank,
            max_steps=args.steps,
            row_tokens=args.row_tokens,
            rows_per_step=args.rows_per_step,
            checkpoint_every=10_000,
        )
        ours = train_lora(base, texts, Path(tmp) / "out", config, work_dir=Path(tmp) / "work")
    print(
        f"kadapt packed:       {ours.tokens_per_second:8.1f} real tok/s "
        f"({args.rows_per_step} rows x {args.row_tokens} tokens per step, no padding inside rows)"
    )
    hf_rate, hf_tokens = run_hf(base, texts, args.steps, args.hf_batch, args.row_tokens, args.rank)
    print(
        f"HF Trainer + PEFT:   {hf_rate:8.1f} real tok/s ({args.hf_batch} examples per step, padded to the "
        f"longest; {hf_tokens} real tokens)"
    )
    ratio = ours.tokens_per_second / hf_rate
    print(f"ratio kadapt / HF: {ratio:.2f}x (target >= 2x: {'met' if ratio >= 2 else 'MISSED'})")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
