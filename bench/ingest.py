"""Ingestion throughput: first ingest of N generated documents, then a re-sync with nothing changed.

    .venv/bin/python bench/ingest.py [--docs 2000]

Prints docs/s for the first ingest and the ratio (re-sync unchanged / first ingest); target <= 0.05.
Everything runs in a temporary data dir with the real embedding model, catalog and Chroma.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

TOPICS = ["leave", "expenses", "security", "travel", "onboarding", "payroll", "benefits", "facilities", "legal", "it"]
WORDS = [
    "policy",
    "team",
    "request",
    "approve",
    "manager",
    "portal",
    "deadline",
    "office",
    "laptop",
    "invoice",
    "contract",
    "budget",
    "review",
    "meeting",
    "report",
    "customer",
    "project",
    "access",
    "account",
    "holiday",
    "training",
    "safety",
    "badge",
    "printer",
]


def generate(root: Path, count: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    for index in range(count):
        topic = TOPICS[index % len(TOPICS)]
        folder = root / topic
        folder.mkdir(parents=True, exist_ok=True)
        paragraphs = []
        for _ in range(rng.randint(2, 6)):
            sentence_count = rng.randint(3, 8)
            sentences = [
                " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))).capitalize() + "."
                for _ in range(sentence_count)
            ]
            paragraphs.append(" ".join(sentences))
        body = "\n\n".join(paragraphs)
        (folder / f"{topic}-{index:05d}.md").write_text(f"# {topic.title()} note {index}\n\n{body}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=2000, help="number of generated documents")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kadapt-bench-") as tmp:
        tmp_path = Path(tmp)
        os.environ["KADAPT_DATA_DIR"] = str(tmp_path / "data")
        os.environ["KADAPT_ALLOWED_ROOTS"] = str(tmp_path)
        from kadapt.catalog import open_catalog
        from kadapt.embeddings import load_sentence_transformer
        from kadapt.kbs import add_source, create_kb
        from kadapt.settings import get_settings
        from kadapt.store import get_store
        from kadapt.sync import sync_kb

        generate(tmp_path / "docs", args.docs)
        settings = get_settings()
        catalog = open_catalog(settings)
        store = get_store(settings)
        load_sentence_transformer(store.embedding.model)  # model load is start-up cost, not ingest cost
        create_kb(catalog, "bench")
        add_source(catalog, settings, "bench", "files", {"path": str(tmp_path / "docs")})

        started = time.perf_counter()
        first = sync_kb(catalog, "bench")
        first_seconds = time.perf_counter() - started
        started = time.perf_counter()
        second = sync_kb(catalog, "bench")
        second_seconds = time.perf_counter() - started

        assert first.added == args.docs and second.chunks_embedded == 0 and not second.snapshot_created
        ratio = second_seconds / first_seconds
        print(f"documents: {args.docs}, chunks: {first.chunks_embedded}")
        print(
            f"first ingest:      {first_seconds:7.2f} s  {args.docs / first_seconds:7.1f} docs/s  "
            f"{first.chunks_embedded / first_seconds:7.1f} chunks/s"
        )
        print(
            f"re-sync unchanged: {second_seconds:7.2f} s  ({second.skipped_unread} skipped unread, "
            f"{second.chunks_embedded} chunks embedded)"
        )
        print(f"ratio re-sync / first ingest: {ratio:.4f} (target <= 0.05: {'met' if ratio <= 0.05 else 'MISSED'})")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
