"""`make demo`: the whole kadapt loop with the embedded model, timed stage by stage.

1. The sample employee handbook (md, html, pdf, docx, txt) is ingested and answered from in icl mode.
2. A bundled synthetic KB (samples/reversal: made-up comparative facts, each told in three articles, with
   held-out probes asking them as stated and reversed) goes through the import formats and `kadapt adapt`:
   probes -> pilot (floor, icl, ft, aug-ft measured) -> decision -> the chosen mode trained and activated ->
   report. Then `kadapt serve` answers a chat request for it over HTTP on 127.0.0.1.

Everything is written under .kadapt/demo in the repository, so the demo never touches ~/.kadapt.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / ".kadapt" / "demo"
KADAPT = [sys.executable, "-m", "kadapt.cli"]
HANDBOOK = "handbook"
FACTS = "facts"
STAGES: list[tuple[str, float]] = []

ENV = os.environ | {
    "KADAPT_DATA_DIR": str(DATA),
    "KADAPT_ALLOWED_ROOTS": str(REPO / "samples"),
    "KADAPT_MODELS_DIR": os.environ.get("KADAPT_MODELS_DIR", str(REPO / ".kadapt" / "models")),
    "COLUMNS": os.environ.get("COLUMNS", "120"),
}


def kadapt(*args: str, stage: str | None = None, capture: bool = False) -> subprocess.CompletedProcess:
    print(f"\n$ kadapt {' '.join(args)}", flush=True)
    started = time.perf_counter()
    completed = subprocess.run([*KADAPT, *args], env=ENV, check=False, capture_output=capture, text=True)
    seconds = time.perf_counter() - started
    print(f"  ({seconds:.1f} s)", flush=True)
    if stage:
        STAGES.append((stage, seconds))
    if completed.returncode != 0:
        if capture:
            print(completed.stdout, completed.stderr, sep="\n")
        sys.exit(completed.returncode)
    return completed


def accuracy_tables(reported: dict) -> None:
    """The pilot's accuracy per mode and kind, multiple choice beside served (what chat users get)."""
    served = {(row["mode"], row["kind"]): row for row in (reported.get("served") or {}).get("results", [])}
    print("\nAccuracy per mode and probe kind (95% intervals): multiple choice (MC) vs served chat answers")
    print(f"  {'mode':<11}{'kind':<10}{'MC':>20}{'served':>20}")
    for row in reported.get("results", []):
        other = served.get((row["mode"], row["kind"]))
        cells = [
            f"{item['accuracy']:.2f} [{item['ci_low']:.2f}-{item['ci_high']:.2f}]" if item else "-"
            for item in (row, other)
        ]
        print(f"  {row['mode']:<11}{row['kind']:<10}{cells[0]:>20}{cells[1]:>20}")


def demo_question(reported: dict, mode: str, default: str) -> str:
    """A chat question the chosen mode answered right in the pilot's served evaluation (else ``default``)."""
    samples = ((reported.get("served") or {}).get("samples") or {}).get(mode) or []
    return next((sample["question"] for sample in samples if sample.get("correct")), default)


def chat_over_http(kb: str, question: str) -> None:
    import httpx

    sys.path.insert(0, str(REPO))
    from tests.conftest import Server  # the same helper the end-to-end tests use

    started = time.perf_counter()
    server = Server(ENV, "--no-auth")
    try:
        print(f"\nkadapt serve is up at {server.url}; POST /v1/chat/completions (model={kb!r}):")
        response = httpx.post(
            f"{server.url}/v1/chat/completions",
            json={"model": kb, "messages": [{"role": "user", "content": question}]},  # the served defaults
            timeout=120,
        )
        body = response.json()
        text = body["choices"][0]["message"]["content"].strip()
        print(f"  Q: {question}\n  A: {text!r}  (HTTP {response.status_code}, served as {body['kadapt']['mode']})")
        for citation in body.get("citations") or []:
            print(f'  cited [{citation["index"]}] {citation["locator"]}: "{citation["quote"]}"')
        if not body.get("citations"):
            print("  (no citation: this mode answers from its adapter, without documents in the prompt)")
    finally:
        server.stop()
    STAGES.append(("serve + chat over HTTP", time.perf_counter() - started))


def main() -> None:
    began = time.perf_counter()
    shutil.rmtree(DATA, ignore_errors=True)
    DATA.mkdir(parents=True)

    print("== 1. An employee handbook, answered from its documents (icl) ==")
    kadapt("kb", "create", HANDBOOK, "--title", "Northwind Robotics employee handbook", "--readers", "staff")
    kadapt("source", "add", HANDBOOK, "files", "--path", str(REPO / "samples" / "handbook"))
    kadapt("sync", HANDBOOK, stage="handbook: sync (parse, chunk, embed)")
    kadapt("sync", HANDBOOK, stage="handbook: re-sync, nothing changed")
    kadapt("search", HANDBOOK, "What is the hotel limit in London?", "-k", "2")
    kadapt(
        "chat",
        HANDBOOK,
        "--ask",
        "How many days of paid annual leave does a full-time employee get?",
        "--max-tokens",
        "40",
        stage="handbook: chat (retrieval + generation)",
    )

    print("\n== 2. Which way of teaching generalizes best for the money? The whole loop on a synthetic KB ==")
    samples = REPO / "samples" / "reversal"
    kadapt("kb", "import", FACTS, str(samples / "documents.jsonl"), stage="facts: import 36 documents")
    kadapt("probes", "import", FACTS, str(samples / "probes.jsonl"), stage="facts: import 24 probes")
    kadapt("probes", "list", FACTS, "--limit", "4")
    kadapt("kb", "set-workload", FACTS, "--queries-per-day", "200", "--horizon-days", "90", "--floor", "0.6")
    kadapt("adapt", FACTS, stage="facts: adapt (probes, pilot, decide, train, activate, report)")
    reported = json.loads(kadapt("report", FACTS, "--json", capture=True).stdout)
    decision = reported["decision"]
    data = json.loads(Path(reported["json"]).read_text())  # the report's data: accuracy, served, samples
    accuracy_tables(data)
    print(f"\nDecision for {FACTS!r}: serve it as {decision['mode']} ({decision['policy']} policy).")
    print("  " + decision["rationale"].splitlines()[0])
    chat_over_http(FACTS, demo_question(data, decision["mode"], "Which animals are kron more dangerous than?"))

    total = time.perf_counter() - began
    print("\n== Time per stage ==")
    for name, seconds in STAGES:
        print(f"  {name:<58} {seconds:7.1f} s")
    print(f"  {'total':<58} {total:7.1f} s")
    print(
        f"\nReport: {reported['html']}\nData: {DATA}\nTry:\n"
        f"  KADAPT_DATA_DIR={DATA} .venv/bin/kadapt chat {HANDBOOK}\n"
        f"  KADAPT_DATA_DIR={DATA} .venv/bin/kadapt serve --no-auth   "
        f"# then open http://127.0.0.1:8000/reports/{FACTS} and /docs"
    )


if __name__ == "__main__":
    main()
