"""Generalization probes of free-form KBs: how many, how balanced, and what the embedded model scores on
them with no context (the floor) and with only their source documents in context (answerability).

    .venv/bin/python bench/probe_floor.py [--show 10] [--json out.json]

Builds two KBs in a temporary data folder: samples/biographies (with its hand-written probes imported)
and samples/handbook; runs the ``relations`` generator (``reversal`` and ``multi-hop``) on both, then
scores every probe's multiple-choice form with the KB's base model: no context, and with the probe's source
documents fenced before the question as icl does. Prints per KB, generator and kind: n, accuracy with its
95% interval (Wilson), and the best position/length shortcut (``kadapt.probes.balance``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--show", type=int, default=10, help="print this many generated probes per KB")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="kadapt-probe-floor-"))
    os.environ["KADAPT_DATA_DIR"] = str(root / "data")
    os.environ["KADAPT_ALLOWED_ROOTS"] = str(REPO / "samples")
    os.environ.setdefault("KADAPT_MODELS_DIR", str(REPO / ".kadapt" / "models"))

    from kadapt.catalog import open_catalog
    from kadapt.evaluate import ICL_HEADER, proportion, score_mode
    from kadapt.kbs import add_source, create_kb, get_kb, latest_snapshot
    from kadapt.models import get_model_pool
    from kadapt.probes import balance, generate_probes, import_probes, snapshot_probes
    from kadapt.settings import get_settings
    from kadapt.sync import sync_kb

    catalog = open_catalog()
    settings = get_settings()
    create_kb(catalog, "bio")
    add_source(catalog, settings, "bio", "jsonl", {"path": str(REPO / "samples/biographies/documents.jsonl")})
    create_kb(catalog, "handbook")
    add_source(catalog, settings, "handbook", "files", {"path": str(REPO / "samples/handbook")})
    figures: dict = {}
    for slug in ("bio", "handbook"):
        sync_kb(catalog, slug)
        if slug == "bio":
            import_probes(catalog, slug, REPO / "samples/biographies/probes.jsonl")
        generate_probes(catalog, slug, names=["relations"])
        kb = get_kb(catalog, slug)
        probes = snapshot_probes(catalog, latest_snapshot(catalog, kb.id).id)
        texts = {}
        from kadapt.augment import kb_documents

        for document in kb_documents(catalog, kb.id):
            texts[document.id] = document.text
        model = get_model_pool().get(kb.base_model)
        contexts = [ICL_HEADER + "\n\n".join(texts[doc_id] for doc_id in probe.source_ids) + "\n\n" for probe in probes]
        floor = score_mode(model, "none", probes)
        sourced = score_mode(model, "sources", probes, contexts=contexts)
        groups: dict[tuple[str, str], list[int]] = {}
        for index, probe in enumerate(probes):
            groups.setdefault((probe.generator, probe.kind), []).append(index)
        print(f"\n## {slug}: {len(texts)} documents, {len(probes)} probes")
        print("| generator | kind | n | no context | source documents in context | best shortcut |")
        print("|---|---|---|---|---|---|")
        for (generator, kind), indices in sorted(groups.items()):
            chosen = [probes[i] for i in indices]
            row = {}
            for name, score in (("none", floor), ("sources", sourced)):
                correct = sum(score.picks[i] == probes[i].answer_index for i in indices)
                row[name] = proportion(correct, len(indices))
            shortcut = balance(chosen)[kind]
            best = max(shortcut[key] for key in ("first", "last", "shortest", "longest"))
            figures[f"{slug}/{generator}/{kind}"] = {**row, "n": len(indices), "best_shortcut": best}

            def cell(value):
                return f"{value['accuracy']:.2f} [{value['low']:.2f}–{value['high']:.2f}]"

            cells = f"{cell(row['none'])} | {cell(row['sources'])}"
            print(f"| {generator} | {kind} | {len(indices)} | {cells} | {best:.2f} |")
        generated = [probe for probe in probes if probe.generator == "relations"]
        for probe in generated[: args.show]:
            answer = probe.choices[probe.answer_index]
            print(f"- [{probe.kind}] {probe.chat_question} -> {answer!r}; distractors {probe.choices}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    sys.exit(main())
