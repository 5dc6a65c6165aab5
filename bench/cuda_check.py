"""The CUDA code paths, checked against the CPU on the same machine: generation, batched scoring, LoRA training.

Runs where ``torch.cuda.is_available()``. The model is a small Llama-architecture network with SmolLM2's
tokenizer and random weights (``--model-files`` holds the tokenizer and config of the packaged model): it checks
that each path runs on the GPU in bfloat16 and agrees with the float32 CPU path, not what the model knows.

    python bench/cuda_check.py --model-files .kadapt/models/smollm2-135m-instruct
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "platform"), str(REPO / "plugins")]

TEXTS = [
    f"Fact {i}: the {colour} valve in hall {i} is checked every {days} days by the {team} team."
    for i, (colour, days, team) in enumerate(
        [("red", 3, "night"), ("blue", 5, "day"), ("green", 7, "audit"), ("amber", 11, "safety")] * 4
    )
]
ITEMS = [
    (f"Fact {i}: the {colour} valve in hall {i} is checked every", [" 3 days", " 5 days", " 7 days", " 11 days"])
    for i, colour in enumerate(["red", "blue", "green", "amber"] * 3)
]


def build_model(files: Path, out: Path) -> Path:
    """A 4-layer model with the packaged model's tokenizer, vocabulary and architecture; random weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    out.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        if (files / name).exists():
            shutil.copy(files / name, out / name)
    config = AutoConfig.from_pretrained(files)
    config.update(
        {
            "hidden_size": 256,
            "intermediate_size": 512,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 64,
        }
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    return out


def engine(path: Path, device: str):
    import torch

    from kadapt_transformers.engine import TransformersModel

    available = torch.cuda.is_available
    torch.cuda.is_available = lambda: device == "cuda"  # the engine picks its device at construction
    try:
        return TransformersModel(str(path), "tiny", max_batch_size=8)
    finally:
        torch.cuda.is_available = available


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-files", type=Path, required=True, help="folder with tokenizer.json and config.json")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--device", default="cuda", help="'cpu' runs every step on the CPU (to try the script)")
    args = parser.parse_args()

    import torch

    from kadapt.models.base import ChatMessage, GenerationParams
    from kadapt.training import TrainConfig, train_lora

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: nothing to check (--device cpu tries the script on the CPU)")
        return 2
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    gpu_name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    results: dict[str, object] = {"gpu": gpu_name, "torch": torch.__version__}
    work = Path(tempfile.mkdtemp(prefix="kadapt-cuda-"))
    base = build_model(args.model_files, work / "base")
    failures: list[str] = []

    # 1. batched scoring: GPU (bf16) against the CPU (fp32), and the tree-packed batch against one forward per item
    gpu, cpu = engine(base, args.device), engine(base, "cpu")
    if args.device == "cuda":
        assert gpu.device == "cuda" and next(gpu.model.parameters()).dtype == torch.bfloat16
    started = time.perf_counter()
    batch_gpu = gpu.score_batch(ITEMS)
    sync()
    results["score_batch_gpu_s"] = round(time.perf_counter() - started, 3)
    single_gpu = [gpu.score_choices(prompt, choices) for prompt, choices in ITEMS]
    batch_cpu = cpu.score_batch(ITEMS)
    flat = lambda rows: [value for row in rows for value in row]  # noqa: E731
    tokens = sum(len(gpu.tokenizer(c, add_special_tokens=False).input_ids) for _, cs in ITEMS for c in cs)
    diff_gpu_cpu = max(abs(a - b) for a, b in zip(flat(batch_gpu), flat(batch_cpu), strict=True))
    diff_batch_single = max(abs(a - b) for a, b in zip(flat(batch_gpu), flat(single_gpu), strict=True))
    results["score_max_diff_gpu_bf16_vs_cpu_fp32_nats"] = round(diff_gpu_cpu, 4)
    results["score_max_diff_batch_vs_single_gpu_nats"] = round(diff_batch_single, 4)
    results["score_tokens_per_choice"] = round(tokens / sum(len(cs) for _, cs in ITEMS), 2)
    # bf16 keeps ~3 significant digits: allow 0.05 nats per scored token
    if diff_gpu_cpu > 0.05 * tokens / len(flat(batch_gpu)) * 4:
        failures.append(f"GPU and CPU scores differ by {diff_gpu_cpu:.3f} nats")
    if diff_batch_single > 0.25:
        failures.append(f"batched and single GPU scores differ by {diff_batch_single:.3f} nats")

    # 2. batched generation on the GPU: a batch of 4 conversations, greedy, against each alone
    params = GenerationParams(max_tokens=12, temperature=0.0)
    conversations = [
        [ChatMessage(role="user", content=f"Question {i}: what is checked in hall {i}?")] for i in range(4)
    ]
    started = time.perf_counter()
    together = gpu.generate_batch(conversations, params)
    results["generate_batch_gpu_s"] = round(time.perf_counter() - started, 3)
    alone = [gpu.generate_batch([conversation], params)[0] for conversation in conversations]
    same = sum(a.text == b.text for a, b in zip(together, alone, strict=True))
    results["generate_same_text_batched_vs_alone"] = f"{same}/4"
    results["generate_completion_tokens"] = [c.completion_tokens for c in together]
    if any(c.completion_tokens == 0 for c in together):
        failures.append("a GPU generation returned no tokens")

    # 3. LoRA training on the GPU: the loss falls and the adapter raises the trained texts' likelihood
    config = TrainConfig(
        rank=8,
        alpha=16,
        learning_rate=3e-3,
        epochs=1,
        max_steps=200 if args.device == "cuda" else 60,
        row_tokens=128,
        rows_per_step=4,
        checkpoint_every=1000,
    )
    started = time.perf_counter()
    trained = train_lora(str(base), TEXTS, work / "adapter", config, work_dir=work / "train-work")
    sync()
    results["train"] = {
        "device": trained.device,
        "steps": trained.steps,
        "seconds": round(time.perf_counter() - started, 2),
        "tokens_per_second": trained.tokens_per_second,
        "first_loss": trained.loss_curve[0],
        "final_loss": trained.final_loss,
    }
    if trained.device != args.device:
        failures.append(f"training ran on {trained.device}")
    if not trained.final_loss < trained.loss_curve[0] * 0.75:
        failures.append(f"training loss {trained.loss_curve[0]} -> {trained.final_loss} fell by less than 25%")
    adapter_scores = gpu.score_batch(ITEMS, adapter_id="a1", adapter_path=str(work / "adapter"))
    base_scores = gpu.score_batch(ITEMS)
    right = [0, 1, 2, 3] * 3
    picks = lambda rows: sum(max(range(4), key=row.__getitem__) == r for row, r in zip(rows, right, strict=True))  # noqa: E731
    results["probe_accuracy_base_vs_adapter_gpu"] = f"{picks(base_scores)}/12 -> {picks(adapter_scores)}/12"
    cpu.ensure_adapter("a1", str(work / "adapter"))
    adapter_cpu = cpu.score_batch(ITEMS, adapter_id="a1", adapter_path=str(work / "adapter"))
    results["adapter_score_max_diff_gpu_vs_cpu_nats"] = round(
        max(abs(a - b) for a, b in zip(flat(adapter_scores), flat(adapter_cpu), strict=True)), 4
    )
    gain = sum(a[r] - b[r] for a, b, r in zip(adapter_scores, base_scores, right, strict=True)) / len(right)
    results["trained_answer_logprob_gain_nats"] = round(gain, 3)
    if gain < 1.0:
        failures.append(f"the GPU-trained adapter raises the trained answers' log-probability by only {gain:.2f} nats")
    adapted = gpu.generate_batch(
        conversations[:2], GenerationParams(max_tokens=8, adapter_id="a1", adapter_path=str(work / "adapter"))
    )
    results["generate_with_adapter_tokens"] = [c.completion_tokens for c in adapted]
    gpu.close()
    cpu.close()
    results["failures"] = failures
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
