"""`make demo`: ingest the sample handbook KB, show incremental sync, and search it.

Everything is written under .kadapt/demo in the repository, so the demo never touches ~/.kadapt.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / ".kadapt" / "demo"
KADAPT = [sys.executable, "-m", "kadapt.cli"]
KB = "handbook"
QUESTIONS = [
    "How many days of paid annual leave do I get?",
    "What is the hotel limit in London?",
    "Who do I call when my laptop is stolen?",
    "How much does the company pay into my pension?",
]


def kadapt(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    print(f"\n$ kadapt {' '.join(args)}", flush=True)
    started = time.perf_counter()
    completed = subprocess.run([*KADAPT, *args], env=ENV, check=False)
    print(f"  ({time.perf_counter() - started:.1f} s)", flush=True)
    if check and completed.returncode != 0:
        sys.exit(completed.returncode)
    return completed


ENV = os.environ | {
    "KADAPT_DATA_DIR": str(DATA),
    "KADAPT_ALLOWED_ROOTS": str(REPO / "samples"),
    "COLUMNS": os.environ.get("COLUMNS", "120"),
}


def main() -> None:
    shutil.rmtree(DATA, ignore_errors=True)
    kadapt("kb", "create", KB, "--title", "Northwind Robotics employee handbook", "--readers", "staff")
    kadapt("source", "add", KB, "files", "--path", str(REPO / "samples" / "handbook"))
    kadapt("sync", KB)
    print("\nA second sync with nothing changed embeds nothing and records no new snapshot:")
    kadapt("sync", KB)
    kadapt("status", KB)
    for question in QUESTIONS:
        kadapt("search", KB, question, "-k", "2")
    print("\nAsking the embedded SmolLM2-135M-Instruct with the retrieved documents in its prompt (icl mode):")
    for question in QUESTIONS[:2]:
        kadapt("chat", KB, "--ask", question, "--max-tokens", "48")
    print("\nTeaching the handbook to the model: sentence-level augmentations, then a LoRA adapter (aug-ft):")
    kadapt("augment", KB, "--augmenter", "sentence-split")
    kadapt("train", KB, "--mode", "aug-ft", "--epochs", "3", "--lr", "2e-3", "--rows-per-step", "4")
    kadapt("adapters", KB)
    kadapt("kb", "set-mode", KB, "aug-ft")
    kadapt("chat", KB, "--ask", QUESTIONS[0], "--max-tokens", "48")
    print(
        f"\nDemo data is in {DATA}. Try:\n  KADAPT_DATA_DIR={DATA} .venv/bin/kadapt chat {KB}\n"
        f"  KADAPT_DATA_DIR={DATA} .venv/bin/kadapt serve --no-auth   # then open http://127.0.0.1:8000/docs"
    )


if __name__ == "__main__":
    main()
