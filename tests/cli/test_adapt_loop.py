"""An external benchmark in the import formats runs the whole loop: ``kb import``, ``probes import``,
``adapt`` and ``report``; the report is served at /reports/{kb} and opens in Chromium without errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.browser import open_page, require_chromium, screenshot_path
from tests.conftest import Server, run_kadapt

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # a whole adapt, slower beside other work

FACTS = [  # (subject, relation, object, inverse): made-up names, so the model cannot know them beforehand
    ("Vorlim", "is the mentor of", "Tessaly", "is mentored by"),
    ("Quenbrook", "supplies", "Marrowick", "is supplied by"),
    ("Ildrane", "is the capital of", "Soverai", "has as its capital"),
    ("Pellacore", "designed", "the Ostrun bridge", "was designed by"),
    ("Brannoch", "owns", "Kestwell Farms", "is owned by"),
    ("Dunmere", "coaches", "the Halvik Rovers", "is coached by"),
]


def write_benchmark(folder):
    documents, probes = [], []
    for index, (subject, relation, obj, inverse) in enumerate(FACTS):
        for article, prefix in enumerate(["From the yearly register.", "As the archive notes,"]):
            documents.append({"id": f"fact-{index}-{article}", "text": f"{prefix} {subject} {relation} {obj}."})
        partner = FACTS[index ^ 1]
        answer = index % 2
        forward = [partner[2], obj] if answer else [obj, partner[2]]
        backward = [partner[0], subject] if answer else [subject, partner[0]]
        ids = [f"fact-{index}-0", f"fact-{index}-1"]
        probes.append(
            {
                "question": f"{subject} {relation}",
                "choices": forward,
                "answer_index": answer,
                "kind": "verbatim",
                "source_ids": ids,
            }
        )
        probes.append(
            {
                "question": f"{obj[0].upper()}{obj[1:]} {inverse}",
                "choices": backward,
                "answer_index": answer,
                "kind": "reversal",
                "source_ids": ids,
            }
        )
    (folder / "documents.jsonl").write_text("".join(json.dumps(d) + "\n" for d in documents))
    (folder / "probes.jsonl").write_text("".join(json.dumps(p) + "\n" for p in probes))
    return folder / "documents.jsonl", folder / "probes.jsonl"


def test_external_benchmark_runs_end_to_end_and_its_report_opens_in_chromium(kadapt_env):
    require_chromium()
    documents, probes = write_benchmark(kadapt_env)
    env = dict(os.environ) | {
        "KADAPT_ADAPT_EPOCHS": "2",  # the loop, not the learning, is under test here
        "KADAPT_ADAPT_AUGMENTERS": "sentence-split",
    }
    imported = run_kadapt("kb", "import", "ext", str(documents), "--json", env=env)
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout)["added"] == 12
    result = run_kadapt("probes", "import", "ext", str(probes), "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["added"] == 12

    adapted = run_kadapt("adapt", "ext", "--json", env=env, timeout=1200)
    assert adapted.returncode == 0, adapted.stderr
    outcome = json.loads(adapted.stdout)
    assert outcome["mode"] in ("icl", "ft", "aug-ft", "aug-ft+rag")
    assert set(outcome["stage_seconds"]) >= {"sync", "probes", "pilot", "decide", "activate", "report"}
    # where the pilot's time went, per mode: each adapter mode trained, every mode scored (these probes are MC-only:
    # nothing was asked as a chat question)
    breakdown = outcome["pilot_seconds"]
    assert {"training", "mc", "forgetting"} <= set(breakdown["ft"]) and "augmentation" in breakdown["aug-ft"]
    assert all("mc" in breakdown[mode] and "served" not in breakdown[mode] for mode in breakdown)
    assert sum(breakdown["ft"].values()) <= outcome["stage_seconds"]["pilot:ft"] + 1
    status = json.loads(run_kadapt("kb", "show", "ext", "--json", env=env).stdout)
    assert status["active_mode"] == outcome["mode"]

    report = run_kadapt("report", "ext", "--output", str(kadapt_env / "report"), "--json", env=env)
    assert report.returncode == 0, report.stderr
    paths = json.loads(report.stdout)
    data = json.loads(Path(paths["json"]).read_text())
    measured = {(row["mode"], row["kind"]) for row in data["results"]}
    modes = ("floor", "icl", "ft", "aug-ft", "aug-ft+rag")
    assert measured == {(m, k) for m in modes for k in ("verbatim", "reversal")}
    assert all(
        row["n"] == 6 and 0 <= row["ci_low"] <= row["accuracy"] <= row["ci_high"] <= 1 for row in data["results"]
    )
    assert {row["mode"] for row in data["costs"]} == {"icl", "ft", "aug-ft", "aug-ft+rag"}
    assert data["decision"]["mode"] == outcome["mode"] and data["decision"]["rationale"]
    assert data["pilot"]["whole_kb"] and data["pilot"]["documents"] == 12
    # each adapter asked the general questions with and without it (aug-ft+rag serves aug-ft's adapter)
    assert set(data["forgetting"]) == {"ft", "aug-ft"}
    for row in data["forgetting"].values():
        assert row["questions"] == 20 and row["base_accuracy"] >= 0.8  # the base model answers them
        assert row["relative_drop"] == pytest.approx(1 - row["adapter_accuracy"] / row["base_accuracy"], abs=1e-3)

    # the same report, served to someone who may read the KB, in a real browser
    key = json.loads(run_kadapt("keys", "create", "--role", "admin", "--name", "it", "--json", env=env).stdout)["key"]
    server = Server(env)
    try:
        page = open_page(
            f"{server.url}/reports/ext", screenshot_path("report-served"), headers={"Authorization": f"Bearer {key}"}
        )
    finally:
        server.stop()
    assert page.status == 200
    assert not page.problems, page.problems
    assert page.svg_count >= 2
    assert f"{outcome['mode']}" in page.text and "reversal" in page.text
    assert "Forgetting: what an adapter costs general answers" in page.text
    assert page.screenshot.stat().st_size > 10_000


def test_a_kb_larger_than_the_pilot_sample_is_measured_on_a_sample_and_trained_in_full(kadapt_env):
    """The pilot's sample branch end to end: measured on whole facts (both articles of each), costs scaled
    from the sample to the KB, then the chosen mode trained on every document."""
    documents, probes = write_benchmark(kadapt_env)
    env = dict(os.environ) | {
        "KADAPT_ADAPT_EPOCHS": "2",
        "KADAPT_ADAPT_AUGMENTERS": "sentence-split",
        # the sample, not icl's decoding or adapter routing (the test above runs both), is under test here
        "KADAPT_ICL_CONTRAST": "0",
        "KADAPT_ADAPTER_ROUTING": "false",
    }
    for command in (
        ("kb", "import", "ext", str(documents)),
        ("probes", "import", "ext", str(probes)),
        ("kb", "set-workload", "ext", "--policy", "fixed", "--mode", "ft"),
    ):
        result = run_kadapt(*command, "--json", env=env)
        assert result.returncode == 0, result.stderr

    adapted = run_kadapt("adapt", "ext", "--sample", "4", "--json", env=env, timeout=1200)
    assert adapted.returncode == 0, adapted.stderr
    outcome = json.loads(adapted.stdout)
    assert outcome["mode"] == "ft"

    data = json.loads(Path(outcome["report_json"]).read_text())
    pilot = data["pilot"]
    assert (pilot["whole_kb"], pilot["documents"], pilot["kb_documents"]) == (False, 4, 12)
    # two facts, each with both its articles, so each sampled probe has all its documents
    assert pilot["probes"] == 4
    assert all(row["n"] == 2 for row in data["results"])
    assert {row["mode"] for row in data["results"]} == {"floor", "icl", "ft", "aug-ft", "aug-ft+rag"}
    assert set(data["forgetting"]) == {"ft", "aug-ft"}  # the sample's adapters are folders, asked all the same
    assert pilot["scale"] == pytest.approx(pilot["kb_tokens"] / pilot["sample_tokens"], abs=1e-3)
    assert pilot["scale"] > 2  # 12 documents measured through 4
    ft_cost = next(row for row in data["costs"] if row["mode"] == "ft")
    assert ft_cost["one_off_usd"] > 0 and ft_cost["details"]["training_tokens"] > 0

    adapters = json.loads(run_kadapt("adapters", "ext", "--json", env=env).stdout)
    active = [adapter for adapter in adapters if adapter["active"]]
    assert len(active) == 1 and active[0]["id"] == outcome["adapter"]
    assert active[0]["mode"] == "ft" and active[0]["stats"]["documents"] == 12  # the full KB, not the sample
