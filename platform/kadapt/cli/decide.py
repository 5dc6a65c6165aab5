"""``kadapt probes``, ``kadapt kb import``, ``kadapt kb set-workload``, ``kadapt decide``, ``kadapt adapt``,
``kadapt report`` and ``kadapt bench generalization``: measuring, deciding and reporting."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Any

import typer

from kadapt.cli import _context
from kadapt.cli._output import (
    JsonOption,
    console,
    count_progress,
    err_console,
    job_progress,
    print_json,
    print_table,
)
from kadapt.errors import KadaptError

probes_app = typer.Typer(help="Held-out generalization probes: generate, import, list, answer.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks that run the whole measuring loop.", no_args_is_help=True)

SampleOption = Annotated[
    int | None, typer.Option("--sample", help="Documents in the pilot sample (default KADAPT_PILOT_DOCUMENTS).")
]
EpochsOption = Annotated[int | None, typer.Option(help="Training epochs (default KADAPT_ADAPT_EPOCHS).")]
LrOption = Annotated[float | None, typer.Option("--lr", help="Learning rate (default KADAPT_ADAPT_LEARNING_RATE).")]


def register(app: typer.Typer, kb_app: typer.Typer) -> None:
    app.add_typer(probes_app, name="probes")
    app.add_typer(bench_app, name="bench")
    app.command("decide")(decide)
    app.command("adapt")(adapt)
    app.command("report")(report)
    kb_app.command("import")(kb_import)
    kb_app.command("set-workload")(set_workload)


def _train(epochs: int | None, lr: float | None) -> dict[str, Any] | None:
    values = {"epochs": epochs, "learning_rate": lr}
    return {key: value for key, value in values.items() if value is not None} or None


def _run(kind: str, kb: str, params: dict[str, Any], json_output: bool) -> dict[str, Any]:
    from kadapt.jobs import get_job, outcome_message, submit
    from kadapt.kbs import get_kb

    catalog = _context.catalog()
    kb_row = get_kb(catalog, kb)
    with job_progress(f"{kind} {kb}", quiet=json_output) as listeners:
        job_id = submit(catalog, kind, kb_id=kb_row.id, params={"kb": kb} | params, listeners=listeners)
    job = get_job(catalog, job_id)
    if job.state != "succeeded":
        if json_output:
            print_json({"job": job.id, "state": job.state, "error": job.error})
        raise KadaptError(outcome_message(job))
    return job.result or {}


# -- probes ----------------------------------------------------------------------------------------------


@probes_app.command("generate")
def probes_generate(
    kb: Annotated[str, typer.Argument(help="The KB.")],
    generator: Annotated[
        list[str] | None, typer.Option("--generator", "-g", help="Generator to run (repeatable); default all.")
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Generate probes for the KB's current snapshot (documents unchanged since the last run keep theirs)."""
    result = _run("probe", kb, {"generators": generator}, json_output)
    if json_output:
        print_json(result)
        return
    for name, counts in result["by_generator"].items():
        line = f"{name}: {counts['added']} probes added from {counts['documents']} documents"
        if counts.get("left_out"):
            line += f"; {counts['left_out']} documents left without (KADAPT_PROBE_DOCUMENTS)"
        console.print(line)
    console.print(f"carried over: {result['carried_over']}; probes by kind: {result['probes']}")


@probes_app.command("import")
def probes_import(
    kb: Annotated[str, typer.Argument(help="The KB.")],
    file: Annotated[
        Path,
        typer.Argument(
            help='JSON Lines: {"question": str, "choices": [str], "answer_index": int, "kind": str (any short '
            'name), "source_ids": [document ids] (optional), "chat_question": str (optional: the chat form), '
            '"answers": [accepted answers] (optional, default the answer choice)} per line.'
        ),
    ],
    json_output: JsonOption = False,
) -> None:
    """Import probes (any external benchmark) into the KB's current snapshot; a bad line imports nothing."""
    from kadapt.probes import import_probes

    result = import_probes(_context.catalog(), kb, file)
    if json_output:
        print_json(result)
    else:
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(result["kinds"].items()))
        console.print(
            f"imported {result['added']} probes ({result['duplicates']} already there) into {kb}: "
            f"{result['chat']} with a chat form, {result['mc_only']} MC-only; kinds: {kinds}",
            highlight=False,
        )


@probes_app.command("list")
def probes_list(
    kb: Annotated[str, typer.Argument(help="The KB.")],
    kind: Annotated[str | None, typer.Option(help="Only probes of this kind.")] = None,
    limit: Annotated[int, typer.Option(help="Show at most this many.")] = 20,
    json_output: JsonOption = False,
) -> None:
    """List the probes of the KB's current snapshot, with how balanced each kind is against shortcuts."""
    from kadapt.kbs import get_kb, latest_snapshot
    from kadapt.probes import balance, snapshot_probes
    from kadapt.views import ProbeView

    catalog = _context.catalog()
    snapshot = latest_snapshot(catalog, get_kb(catalog, kb).id)
    probes = snapshot_probes(catalog, snapshot.id) if snapshot else []
    if kind:
        probes = [probe for probe in probes if probe.kind == kind]
    if json_output:
        print_json({"probes": [ProbeView.of(probe).json_data() for probe in probes], "balance": balance(probes)})
        return
    print_table(
        f"{len(probes)} probes",
        ["id", "kind", "generator", "question", "choices", "answer", "chat question", "accepted answers"],
        [
            (
                p.id,
                p.kind,
                p.generator,
                p.question[-60:],
                " | ".join(p.choices),
                p.choices[p.answer_index],
                p.chat_question or "(MC-only)",
                " | ".join(p.answers or []),
            )
            for p in probes[:limit]
        ],
    )
    print_table(
        "shortcut check (accuracy of always picking ...)",
        ["kind", "n", "chance", "first", "last", "shortest", "longest"],
        [
            (
                k,
                v["n"],
                f"{v['chance']:.2f}",
                f"{v['first']:.2f}",
                f"{v['last']:.2f}",
                f"{v['shortest']:.2f}",
                f"{v['longest']:.2f}",
            )
            for k, v in balance(probes).items()
        ],
    )


def _sample_answers(answers, samples: int) -> list:
    """Up to ``samples`` answers to show: half right and half wrong where there are enough of each, else filled
    from the other."""
    right = [item for item in answers if item.correct]
    wrong = [item for item in answers if not item.correct]
    half = samples // 2
    shown = right[:half] + wrong[: samples - min(len(right), half)]
    return shown + right[half : half + samples - len(shown)]


def _print_samples(shown) -> None:
    if shown:
        print_table(
            "sample answers",
            ["kind", "question", "answer", "verdict"],
            [
                (
                    item.kind,
                    item.question,
                    " ".join(item.answer.split())[:160],
                    ("right: " if item.correct else "wrong: ") + item.reason,
                )
                for item in sorted(shown, key=lambda item: item.probe_id)
            ],
        )


@probes_app.command("answer")
def probes_answer(
    kb: Annotated[str, typer.Argument(help="The KB.")],
    mode: Annotated[
        str,
        typer.Option(
            help="active (what the KB serves now), icl (documents in the prompt), ft, aug-ft or aug-ft+rag "
            "(the aug-ft adapter with icl's documents)."
        ),
    ] = "active",
    adapter: Annotated[
        str | None,
        typer.Option(help="With --mode ft, aug-ft or aug-ft+rag: this adapter (default: that mode's newest ready)."),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(help="Ask at most this many probes, taken in turn from each kind.")
    ] = None,
    samples: Annotated[int, typer.Option(help="Sample questions, answers and verdicts to show.")] = 6,
    json_output: JsonOption = False,
) -> None:
    """Ask the KB's answer probes as chat questions, served as /v1/chat/completions serves them, and judge
    the answers (KADAPT_JUDGE); prints served accuracy per kind with 95% intervals. Answers are stored."""
    from kadapt.served import answer_probes

    with count_progress(f"answering {kb} ({mode})", quiet=json_output) as update:
        result = answer_probes(
            _context.catalog(),
            _context.store(),
            kb,
            mode=mode,
            adapter_id=adapter,
            limit=limit,
            progress=lambda done, total: update(done, total, "answers"),
        )
    if json_output:
        print_json(result.to_dict())
        return
    served = result.mode + (f" (adapter {result.adapter_id})" if result.adapter_id else "")
    print_table(
        f"served accuracy of {result.kb}, {served}, judge {result.judge!r}",
        ["kind", "n", "correct", "accuracy", "95% interval"],
        [
            (kind, s["n"], s["correct"], f"{s['accuracy']:.2f}", f"{s['low']:.2f}-{s['high']:.2f}")
            for kind, s in result.by_kind.items()
        ],
    )
    _print_samples(_sample_answers(result.answers, samples))
    if result.mc_only:
        console.print(f"{result.mc_only} MC-only probes (no chat form) were not asked", highlight=False)
    console.print(f"stored as run {result.run_id}", highlight=False)


# -- KB import and workload -----------------------------------------------------------------------------


def kb_import(
    kb: Annotated[str, typer.Argument(help="The KB (created when missing).")],
    file: Annotated[
        Path, typer.Argument(help='JSON Lines documents: {"text": str, "id": str, "metadata": {}} per line.')
    ],
    json_output: JsonOption = False,
) -> None:
    """Import documents from a JSON Lines file (a `jsonl` source) and sync them into the KB."""
    from kadapt.errors import NotFound
    from kadapt.kbs import add_source, create_kb, get_kb, list_sources

    catalog = _context.catalog()
    try:
        get_kb(catalog, kb)
    except NotFound:
        create_kb(catalog, kb)
    path = file.expanduser().resolve()
    if not any(s.kind == "jsonl" and Path(s.config.get("path", "")) == path for s in list_sources(catalog, kb)):
        add_source(catalog, _context.settings(), kb, "jsonl", {"path": str(path)})
    result = _run("sync", kb, {}, json_output)
    if json_output:
        print_json(result)
    else:
        console.print(
            f"{kb}: {result.get('added', 0)} added, {result.get('updated', 0)} updated, "
            f"{result.get('unchanged', 0)} unchanged, {result.get('errors', 0)} errors"
        )


def set_workload(
    kb: Annotated[str, typer.Argument(help="The KB.")],
    queries_per_day: Annotated[float | None, typer.Option(help="Expected chat queries per day.")] = None,
    horizon_days: Annotated[float | None, typer.Option(help="Days the decision should pay off over.")] = None,
    floor: Annotated[
        float | None, typer.Option(help="Accuracy floor: lower 95% bound every cared-for probe kind must reach.")
    ] = None,
    kinds: Annotated[
        str | None, typer.Option(help="Comma-separated probe kinds the KB cares about (default: all measured).")
    ] = None,
    budget: Annotated[float | None, typer.Option(help="Budget in USD over the horizon.")] = None,
    answer_tokens: Annotated[int | None, typer.Option(help="Completion tokens per query.")] = None,
    mode: Annotated[
        str | None, typer.Option(help="Mode for the 'fixed' policy: icl, ft, aug-ft or aug-ft+rag.")
    ] = None,
    policy: Annotated[str | None, typer.Option(help="Policy: cost-aware, accuracy-first, fixed.")] = None,
    json_output: JsonOption = False,
) -> None:
    """Set the KB's workload and policy; a KB that was measured before is re-decided at once."""
    from kadapt.kbs import latest_decision
    from kadapt.policy import set_workload as update
    from kadapt.views import DecisionView, KBWithDecision

    changes = {
        "queries_per_day": queries_per_day,
        "horizon_days": horizon_days,
        "accuracy_floor": floor,
        "kinds": [kind.strip() for kind in kinds.split(",") if kind.strip()] if kinds is not None else None,
        "budget_usd": budget,
        "answer_tokens": answer_tokens,
        "mode": mode,
    }
    catalog = _context.catalog()
    row = update(catalog, kb, changes, policy)
    decision = latest_decision(catalog, kb)
    if json_output:
        print_json(KBWithDecision.of(row, decision=DecisionView.of(decision) if decision else None).json_data())
        return
    console.print(f"{kb}: policy {row.policy}, workload {row.workload}")
    if decision is not None:
        console.print(f"decision now: [bold]{decision.mode}[/bold]")


# -- decide / adapt / report -----------------------------------------------------------------------------


def _print_estimates(result: dict[str, Any]) -> None:
    decision = result["decision"]
    data = result.get("report") or {}
    rows = data.get("results", [])
    kinds = sorted({row["kind"] for row in rows})
    modes = list(dict.fromkeys(row["mode"] for row in rows))
    cells = {(row["mode"], row["kind"]): row for row in rows}

    def cell(mode: str, kind: str) -> str:
        row = cells.get((mode, kind))
        if row is None:
            return ""
        flag = " ~" if row.get("shortcut_level") and mode != "floor" else ""
        return f"{row['accuracy']:.2f} [{row['ci_low']:.2f}-{row['ci_high']:.2f}]{flag}"

    if rows:
        print_table(
            "accuracy by probe kind [95% interval]; ~ = shortcut level",
            ["mode", *kinds],
            [(mode, *(cell(mode, kind) for kind in kinds)) for mode in modes]
            + [("chance", *(f"{cells[(modes[0], k)]['chance']:.2f}" for k in kinds))],
        )
    costs = data.get("costs", [])
    if costs:
        print_table(
            "cost on the full KB",
            ["mode", "one-off $", "per query $", "one-off s", "per query s", "prompt tokens"],
            [
                (
                    c["mode"],
                    f"{c['one_off_usd']:.4f}",
                    f"{c['per_query_usd']:.6f}",
                    c["one_off_seconds"],
                    c["per_query_seconds"],
                    c["prompt_tokens_per_query"],
                )
                for c in costs
            ],
        )
    console.print(f"\n[bold]decision: {decision['mode']}[/bold] (policy {decision['policy']})")
    console.print(decision["rationale"], highlight=False)
    for warning in data.get("warnings", []):
        err_console.print(f"[yellow]note:[/yellow] {warning}", highlight=False)


def decide(
    kb: Annotated[str, typer.Argument(help="The KB.")],
    sample: SampleOption = None,
    epochs: EpochsOption = None,
    lr: LrOption = None,
    json_output: JsonOption = False,
) -> None:
    """Measure every mode on a pilot sample (accuracy per probe kind, cost) and decide how to serve the KB.

    The decision is recorded; nothing is trained on the full KB or activated (that is `kadapt adapt`)."""
    from kadapt.report import report_data

    _run("evaluate", kb, {"sample_size": sample, "train": _train(epochs, lr)}, json_output)
    data = report_data(_context.catalog(), kb)
    if json_output:
        print_json(data)
        return
    _print_estimates({"decision": data["decision"], "report": data})


def adapt(
    kb: Annotated[str, typer.Argument(help="The KB.")],
    sample: SampleOption = None,
    epochs: EpochsOption = None,
    lr: LrOption = None,
    policy: Annotated[str | None, typer.Option(help="Policy for this run (default: the KB's).")] = None,
    json_output: JsonOption = False,
) -> None:
    """The whole loop: sync, probes, pilot, decide, train the chosen mode on the full KB, activate, report."""
    from kadapt.report import report_data

    result = _run("adapt", kb, {"sample_size": sample, "train": _train(epochs, lr), "policy": policy}, json_output)
    if json_output:
        print_json(result)
        return
    data = report_data(_context.catalog(), kb)
    _print_estimates({"decision": data["decision"], "report": data})
    console.print(
        f"\nserving {kb} as [bold]{result['mode']}[/bold]"
        + (f" (adapter {result['adapter']})" if result["adapter"] else "")
    )
    console.print(f"report: {result['report']}")
    console.print("stage seconds: " + ", ".join(f"{k} {v}" for k, v in result["stage_seconds"].items()))
    for mode, parts in result.get("pilot_seconds", {}).items():
        console.print(f"  pilot {mode}: " + ", ".join(f"{part} {seconds} s" for part, seconds in parts.items()))


def report(
    kb: Annotated[str, typer.Argument(help="The KB.")],
    output: Annotated[Path | None, typer.Option(help="Folder for report.html and report.json.")] = None,
    json_output: JsonOption = False,
) -> None:
    """Write the KB's cost/generalization report (self-contained HTML + the same data as JSON)."""
    from kadapt.report import report_data, write_report

    catalog = _context.catalog()
    data = report_data(catalog, kb)
    folder = output or _context.settings().data_dir / "reports" / kb
    html, json_path = write_report(data, folder)
    if json_output:
        print_json({"html": str(html), "json": str(json_path), "decision": data["decision"]})
    else:
        console.print(f"report: {html}\ndata:   {json_path}")


# -- bench generalization ---------------------------------------------------------------------------------


@bench_app.command("generalization")
def bench_generalization(
    dataset: Annotated[str, typer.Option(help="Synthetic dataset: reversal, syllogism or semantic.")] = "reversal",
    size: Annotated[int | None, typer.Option(help="Facts / premise sets / categories (default per dataset).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the dataset (and of training).")] = 0,
    kb: Annotated[str | None, typer.Option(help="KB to build (default bench-DATASET; replaced if it exists).")] = None,
    epochs: EpochsOption = None,
    lr: LrOption = None,
    json_output: JsonOption = False,
) -> None:
    """Build a KB from a synthetic dataset (nonsense words, after Lampinen et al. 2025) through the import
    formats, then measure floor, icl, ft and aug-ft on its probes and decide; prints accuracy per probe kind."""
    from kadapt.errors import NotFound
    from kadapt.kbs import add_source, create_kb, delete_kb
    from kadapt.probes import import_probes
    from kadapt.report import report_data, write_report
    from kadapt.store import get_store
    from kadapt.synthetic import build_dataset

    settings = _context.settings()
    catalog = _context.catalog()
    built = build_dataset(dataset, size, seed)
    slug = kb or f"bench-{dataset}"
    folder = settings.data_dir / "bench" / slug
    documents_path, probes_path = built.write_jsonl(folder)
    with contextlib.suppress(NotFound):
        delete_kb(catalog, get_store(settings), slug)
    create_kb(catalog, slug, title=f"{built.name} benchmark ({len(built.documents)} documents)")
    add_source(catalog, settings, slug, "jsonl", {"path": str(documents_path)})
    _run("sync", slug, {}, True)
    imported = import_probes(catalog, slug, probes_path)
    err_console.print(
        f"{slug}: {len(built.documents)} documents, {imported['added']} probes ({built.description})", highlight=False
    )
    train = (_train(epochs, lr) or {}) | {"seed": seed}
    _run("evaluate", slug, {"sample_size": len(built.documents), "train": train}, json_output)
    data = report_data(catalog, slug)
    html, _ = write_report(data, settings.data_dir / "reports" / slug)
    if json_output:
        print_json(data | {"report_path": str(html)})
        return
    _print_estimates({"decision": data["decision"], "report": data})
    console.print(f"report: {html}")
