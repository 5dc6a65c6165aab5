"""The inference augmenters (`global`, written by the model; `chain`, by rules) on the synthetic `syllogism`
and `semantic` datasets: their yield and correctness, then ft vs aug-ft with `local` alone, `local` + `chain`
and `local` + `global`, in MC accuracy (the pilot's scoring) and served accuracy (chat questions through the
serving path, judged), with the no-context floor.

    .venv/bin/python bench/global_augmenter.py [--syllogism 12] [--semantic 2] [--epochs N] [--lr X] [--seed 0]
    .venv/bin/python bench/global_augmenter.py --augment-only     # yield and correctness only: no training

Each arm is its own KB built from the dataset's import files (bench-global-DATASET-local, ...-chain,
...-global), so each has its own aug-ft adapter; ft is trained once, in the first arm. The served floor is the
base model asked each chat question alone (no documents, no adapter), judged like the served answers.
Correctness of the inference augmenters' outputs is checked against the dataset's own structure (the
premises' conclusion for `syllogism`; the category hierarchy for `semantic`), not with the checker the
augmenters use. Sizes: --syllogism premise pairs (documents), --semantic root categories (13 documents each);
0 skips one.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FILES = REPO / ".kadapt" / "bench-global-files"  # the import files: a source may not read the data directory


def true_conclusions(dataset: str, documents: list[dict]) -> set[tuple]:
    """What the dataset makes true beyond its stated facts, as :func:`kadapt.statements._key` tuples."""
    from kadapt.synthetic._syllogism import _conclude

    if dataset == "syllogism":
        found = set()
        for document in documents:
            quantifier, subject, predicate = _conclude(document["metadata"]["synthetic"]["premises"])
            found.add(("no", *sorted((subject, predicate))) if quantifier == "no" else ("all", subject, "", predicate))
        return found
    nodes = {doc["metadata"]["synthetic"]["name"]: doc["metadata"]["synthetic"] for doc in documents}
    found = set()
    for name, node in nodes.items():
        ancestors, parent = [], node["parent"]
        while parent in nodes:
            ancestors.append(parent)
            parent = nodes[parent]["parent"]
        ancestors.append("animal")
        found |= {("all", name, "", ancestor) for ancestor in ancestors[1:]}  # the parent itself is stated
        for ancestor in ancestors[:-1]:
            found |= {("all", name, verb, value) for verb, value in nodes[ancestor]["properties"].items()}
    return found


def inference_outputs(catalog, slug: str, dataset: str, documents: list[dict], augmenter: str) -> dict:
    from sqlalchemy import select

    from kadapt.catalog import Augmentation
    from kadapt.kbs import get_kb
    from kadapt.statements import _key, parse_statement

    kb = get_kb(catalog, slug)
    with catalog.session() as session:
        query = select(Augmentation).where(Augmentation.kb_id == kb.id, Augmentation.augmenter == augmenter)
        rows = list(session.scalars(query))
    truth = true_conclusions(dataset, documents)
    correct = 0
    for row in rows:
        statement = parse_statement(row.text)
        correct += statement is not None and _key(statement) in truth
    covered = {next(iter(row.source_hashes)) for row in rows}
    return {
        "outputs": len(rows),
        "correct": correct,
        "documents": len(documents),
        "yield": len(covered),
        "augmenter": augmenter,
        "true_conclusions": len(truth),
        "found": len({_key(s) for row in rows if (s := parse_statement(row.text))} & truth),
        "examples": [row.text for row in rows[:4]],
    }


def served_floor(catalog, slug: str, settings) -> dict[str, dict]:
    """The base model asked each chat question alone, judged as served answers are."""
    from kadapt.judge import get_judge, judge_probe
    from kadapt.kbs import get_kb
    from kadapt.models import get_model_pool
    from kadapt.served import chat_probes
    from kadapt.serving import chat_params

    kb = get_kb(catalog, slug)
    _, probes, _ = chat_probes(catalog, kb)
    model = get_model_pool().get(kb.base_model)
    completions = model.generate_batch(
        [[{"role": "user", "content": probe.chat_question}] for probe in probes], chat_params(settings)
    )
    judge = get_judge(settings)
    verdicts: dict[str, list[int]] = {}
    for probe, completion in zip(probes, completions, strict=True):
        counts = verdicts.setdefault(probe.kind, [0, 0])
        counts[0] += judge_probe(probe, completion.text, judge).correct
        counts[1] += 1
    return {kind: {"correct": c, "n": n, "accuracy": c / n} for kind, (c, n) in verdicts.items()}


INFERENCE_AUGMENTERS = ("chain", "global")


def dataset_kb(dataset: str, built, arm: str, settings, catalog, store) -> str:
    """A fresh KB of the dataset's documents and probes for one arm: its slug."""
    from kadapt.errors import NotFound
    from kadapt.kbs import add_source, create_kb, delete_kb
    from kadapt.probes import import_probes
    from kadapt.sync import sync_kb

    slug = f"bench-global-{dataset}-{arm}"
    documents_path, probes_path = built.write_jsonl(FILES / slug)
    with contextlib.suppress(NotFound):
        delete_kb(catalog, store, slug)
    create_kb(catalog, slug, title=f"{dataset} x {arm} augmenters")
    add_source(catalog, settings, slug, "jsonl", {"path": str(documents_path)})
    sync_kb(catalog, slug, settings=settings, store=store)
    import_probes(catalog, slug, probes_path)
    return slug


def augment_only(dataset: str, size: int, args, settings, catalog, store) -> dict:
    """Each inference augmenter run on the dataset's KB, without training: yield and correctness."""
    from kadapt.augment import augment_kb
    from kadapt.synthetic import build_dataset

    built = build_dataset(dataset, size, args.seed)
    slug = dataset_kb(dataset, built, "augment", settings, catalog, store)
    result: dict = {"documents": len(built.documents), "probes": len(built.probes), "arms": {}, "mc": {}, "served": {}}
    for name in INFERENCE_AUGMENTERS:
        print(f"[{dataset}] {name} ...", file=sys.stderr, flush=True)
        augment_kb(catalog, slug, names=[name], settings=settings)
        result[name] = inference_outputs(catalog, slug, dataset, built.documents, name)
    return result


def run_dataset(dataset: str, size: int, args, settings, catalog, store) -> dict:
    from kadapt.pilot import run_pilot
    from kadapt.served import answer_probes
    from kadapt.synthetic import build_dataset

    built = build_dataset(dataset, size, args.seed)
    arms = {"local": ["local"], "chain": ["local", "chain"], "global": ["local", "global"]}
    train = (
        {"seed": args.seed}
        | ({"epochs": args.epochs} if args.epochs else {})
        | ({"learning_rate": args.lr} if args.lr else {})
    )
    mc: dict[str, dict] = {}
    served: dict[str, dict] = {}
    result: dict = {"documents": len(built.documents), "probes": len(built.probes), "arms": arms}
    for arm, names in arms.items():
        slug = dataset_kb(dataset, built, arm, settings, catalog, store)
        modes = ("ft", "aug-ft") if arm == "local" else ("aug-ft",)
        print(f"[{dataset}] {arm}: augmenters {names}, training {', '.join(modes)} ...", file=sys.stderr, flush=True)
        pilot = run_pilot(
            catalog,
            slug,
            modes=modes,
            sample_size=len(built.documents),
            train=train,
            augmenters=names,
            settings=settings,
        )
        for row in pilot["accuracy"]:
            column = row["mode"] if row["mode"] in ("floor", "ft") else f"aug-ft {arm}"
            mc.setdefault(column, {})[row["kind"]] = row
        for mode in modes:
            column = mode if mode == "ft" else f"aug-ft {arm}"
            served[column] = answer_probes(catalog, store, slug, mode=mode, settings=settings).by_kind
        if arm == "local":
            served["floor"] = served_floor(catalog, slug, settings)
        else:
            result[arm] = inference_outputs(catalog, slug, dataset, built.documents, arm)
    result["mc"], result["served"] = mc, served
    return result


def print_table(dataset: str, result: dict) -> None:
    columns = ["floor", "ft", "aug-ft local", "aug-ft chain", "aug-ft global"]
    print(f"\n{dataset}: {result['documents']} documents, {result['probes']} probes; arms {result['arms']}")
    kinds = sorted({kind for table in result["mc"].values() for kind in table})
    if kinds:  # none with --augment-only
        print(f"{'kind':<11}{'measure':<8}" + "".join(f"{column:>22}" for column in columns))
    for kind in kinds:
        for measure in ("mc", "served"):
            cells = []
            for column in columns:
                row = result[measure].get(column, {}).get(kind)
                cells.append(f"{row['accuracy']:.2f} ({row['correct']}/{row['n']})" if row else "-")
            print(f"{kind:<11}{measure:<8}" + "".join(f"{cell:>22}" for cell in cells))
    for name in INFERENCE_AUGMENTERS:
        found = result.get(name)
        if found:
            print(
                f"{name}: {found['outputs']} outputs, correct {found['correct']}/{found['outputs']}, yield "
                f"{found['yield']}/{found['documents']} documents, {found['found']}/{found['true_conclusions']} of "
                f"the true conclusions written; e.g. {found['examples']}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--syllogism", type=int, default=12, help="premise pairs of the syllogism dataset (0: skip)")
    parser.add_argument("--semantic", type=int, default=2, help="root categories of the semantic dataset (0: skip)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default KADAPT_ADAPT_EPOCHS)")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default KADAPT_ADAPT_LEARNING_RATE)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--augment-only", action="store_true", help="yield and correctness only, no training")
    args = parser.parse_args()
    os.environ.setdefault("KADAPT_MODELS_DIR", str(REPO / ".kadapt" / "models"))
    os.environ.setdefault("KADAPT_DATA_DIR", str(REPO / ".kadapt" / "bench-global"))
    os.environ.setdefault("KADAPT_ALLOWED_ROOTS", str(FILES))
    from kadapt.catalog import open_catalog
    from kadapt.settings import get_settings
    from kadapt.store import get_store

    settings = get_settings()
    catalog, store = open_catalog(settings), get_store(settings)
    for dataset, size in (("syllogism", args.syllogism), ("semantic", args.semantic)):
        if size:
            run = augment_only if args.augment_only else run_dataset
            print_table(dataset, run(dataset, size, args, settings, catalog, store))


if __name__ == "__main__":
    sys.exit(main())
