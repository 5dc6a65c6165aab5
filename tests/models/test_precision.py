"""bf16 and fp32 paths of the transformers backend (KADAPT_PRECISION): both run here, whatever the CPU has (a CPU
without bf16 instructions emulates them, slowly), and agree on what the embedded model picks, answers and learns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kadapt.judge import StringJudge
from kadapt.models.base import GenerationParams
from kadapt.models.precision import cpu_bf16, cpu_has_bf16
from kadapt.prompts import SYSTEM_PROMPT
from kadapt.training import TrainConfig, train_lora
from tests.conftest import MODELS_DIR, clear_caches

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "biographies"
BASE = str(MODELS_DIR / "smollm2-135m-instruct")
pytestmark = pytest.mark.slow  # emulated bf16 on a CPU without it: minutes


def _lines(name: str) -> list[dict]:
    return [json.loads(line) for line in (SAMPLES / name).read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def engines():
    """The embedded model loaded twice: computing in float32, and under bf16 autocast."""
    from kadapt.models import get_model_pool
    from kadapt_transformers.engine import TransformersModel

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KADAPT_MODELS_DIR", str(MODELS_DIR))
        clear_caches()
        get_model_pool().get("smollm2-135m")  # converts the packaged model when needed
    loaded = {precision: TransformersModel(BASE, "smollm2-135m", precision=precision) for precision in ("fp32", "bf16")}
    yield loaded
    for engine in loaded.values():
        engine.close()


def test_auto_computes_in_bf16_only_where_the_cpu_has_it():
    assert cpu_bf16("auto") == cpu_has_bf16()
    assert (cpu_bf16("fp32"), cpu_bf16("bf16")) == (False, True)
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        cpu_bf16("fp16")


def test_the_setting_reaches_the_engine(engines, monkeypatch):
    assert (engines["fp32"].autocast, engines["bf16"].autocast) == (False, True)
    from kadapt.settings import Settings

    monkeypatch.setenv("KADAPT_PRECISION", "fp16")
    with pytest.raises(ValueError, match="precision"):
        Settings()


def test_bf16_picks_what_fp32_picks_on_the_biography_probes(engines):
    """Multiple-choice picks of the first 24 biography probes asked alone, and of 8 asked after their documents:
    >= 95% the same, no choice's log-probability moved by a nat (emulated bf16 is slow, hence the sample).
    bench/precision.py compares the whole set."""
    documents = {row["id"]: row["text"] for row in _lines("documents.jsonl")}
    probes = _lines("probes.jsonl")
    items = [(probe["question"], [" " + choice for choice in probe["choices"]]) for probe in probes[:24]]
    shown = "\n".join(list(documents.values())[:4])
    grounded = [
        (f"Reference documents:\n{shown}\n\n{probe['question']}", [" " + choice for choice in probe["choices"]])
        for probe in probes
        if any(source in list(documents)[:4] for source in probe["source_ids"])
    ]
    assert len(grounded) == 8
    scores = {precision: engine.score_batch(items + grounded) for precision, engine in engines.items()}
    picks = {precision: [row.index(max(row)) for row in rows] for precision, rows in scores.items()}
    same = sum(a == b for a, b in zip(picks["fp32"], picks["bf16"], strict=True))
    assert same >= 0.95 * len(picks["fp32"]), f"{same}/{len(picks['fp32'])} picks agree"
    drift = max(
        abs(a - b) for x, y in zip(scores["fp32"], scores["bf16"], strict=True) for a, b in zip(x, y, strict=True)
    )
    assert drift < 1.0, f"a choice's log-probability moved by {drift:.2f} nats"


def test_bf16_answers_from_the_documents_as_fp32_does(engines):
    """The first 6 reversed biography questions, each asked with its document under the icl system prompt and
    judged as served answers are: bf16 answers right where fp32 does, within one."""
    documents = {row["id"]: row["text"] for row in _lines("documents.jsonl")}
    probes = [probe for probe in _lines("probes.jsonl") if probe["kind"] == "reversal"][:6]
    conversations = [
        [
            {"role": "system", "content": f"{SYSTEM_PROMPT}\n\nDocuments:\n{documents[probe['source_ids'][0]]}"},
            {"role": "user", "content": probe["chat_question"]},
        ]
        for probe in probes
    ]
    judge = StringJudge()
    right = {}
    for precision, engine in engines.items():
        answers = engine.generate_batch(conversations, GenerationParams(max_tokens=32))
        verdicts = [
            judge.judge(
                answer.text,
                accepted=probe["answers"],
                distractors=[c for i, c in enumerate(probe["choices"]) if i != probe["answer_index"]],
            ).correct
            for probe, answer in zip(probes, answers, strict=True)
        ]
        right[precision] = sum(verdicts)
    assert right["fp32"] >= 5, right  # the questions are answerable from the document
    assert right["bf16"] >= right["fp32"] - 1, right


def test_bf16_training_follows_the_fp32_loss_curve(tmp_path, monkeypatch, engines):
    """LoRA steps on 4 biographies: every step's loss within 5% of float32's (relative)."""
    texts = [row["text"] for row in _lines("documents.jsonl")[:4]]
    config = TrainConfig(epochs=2, rank=8, row_tokens=48, rows_per_step=1, checkpoint_every=100)
    curves = {}
    for precision in ("fp32", "bf16"):
        monkeypatch.setenv("KADAPT_PRECISION", precision)
        clear_caches()
        result = train_lora(BASE, texts, tmp_path / precision, config, work_dir=tmp_path / f"work-{precision}")
        curves[precision] = result.loss_curve
    assert len(curves["fp32"]) == len(curves["bf16"]) >= 4
    worst = max(abs(a - b) / a for a, b in zip(curves["fp32"], curves["bf16"], strict=True))
    assert worst < 0.05, (worst, curves)
    assert curves["bf16"][-1] < curves["bf16"][0]  # it learns
