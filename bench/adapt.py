"""`kadapt adapt` on the demo's KB, before vs after, in one run: this tree against an earlier revision.

    .venv/bin/python bench/adapt.py --baseline REV [--configs baseline,current,early-stop] [--early-stop 0.02]
                                    [--reuse baseline] [--set NAME:KADAPT_VAR=VALUE ...]

For each configuration the demo's synthetic KB (samples/reversal: 36 documents, 24 probes, the demo's workload)
is imported into a fresh data dir and `kadapt adapt` runs on it with the same seed. Configurations:

- `baseline`: the code of git revision --baseline (checked out in a temporary worktree; the installed
  dependencies are this tree's);
- `current`: this tree, default settings;
- `early-stop`: this tree with KADAPT_ADAPT_EARLY_STOP_LOSS=--early-stop;
- any other name: this tree with the settings `--set NAME:KADAPT_VAR=VALUE` gives it (repeatable), e.g.
  `--configs current,replay5 --set replay5:KADAPT_ADAPT_REPLAY_PASSES=5`.

Prints each configuration's `kadapt adapt` wall time and the pilot's seconds per mode, its MC and served accuracy
per mode and probe kind with 95% intervals, and its decision; then each configuration's speed-up over the first,
and whether every accuracy's interval overlaps the first's. Writes .kadapt/bench-adapt/results.json.

One configuration takes up to 40 minutes on 2 cores; `--reuse NAME` takes that configuration's result from the
results.json of an earlier run on this machine instead of measuring it again (printed as reused, with the revision
and time it was measured at).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / ".kadapt" / "bench-adapt"
SAMPLES = REPO / "samples" / "reversal"
PACKAGE_ROOTS = ("connectors", "platform", "plugins", "policies")
KB = "facts"


def baseline_tree(revision: str, into: Path) -> Path:
    """A worktree of ``revision`` (checked as a commit first; never read as an option) under ``into``."""
    resolved = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", "--end-of-options", f"{revision}^{{commit}}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if resolved.returncode != 0:
        raise SystemExit(f"--baseline {revision!r} is not a commit of this repository")
    tree = into / "baseline"
    subprocess.run(
        ["git", "worktree", "add", "--detach", "--quiet", str(tree), resolved.stdout.strip()], cwd=REPO, check=True
    )
    return tree


def run_config(name: str, code: Path, env: dict[str, str]) -> dict:
    """Import the KB into a fresh data dir and adapt it with the code under ``code``: times, accuracy, decision."""
    data = OUT / name
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    env = (
        os.environ
        | env
        | {
            "KADAPT_DATA_DIR": str(data / "data"),
            "KADAPT_ALLOWED_ROOTS": str(SAMPLES),
            "KADAPT_MODELS_DIR": os.environ.get("KADAPT_MODELS_DIR", str(REPO / ".kadapt" / "models")),
            "PYTHONPATH": os.pathsep.join(str(code / root) for root in PACKAGE_ROOTS),
        }
    )

    def kadapt(*args: str) -> str:
        completed = subprocess.run(
            [sys.executable, "-m", "kadapt.cli", *args], env=env, capture_output=True, text=True, check=False
        )
        if completed.returncode != 0:
            raise SystemExit(f"[{name}] kadapt {' '.join(args)} failed:\n{completed.stdout}\n{completed.stderr}")
        return completed.stdout

    kadapt("kb", "import", KB, str(SAMPLES / "documents.jsonl"))
    kadapt("probes", "import", KB, str(SAMPLES / "probes.jsonl"))
    kadapt("kb", "set-workload", KB, "--queries-per-day", "200", "--horizon-days", "90", "--floor", "0.6")
    print(f"[{name}] kadapt adapt {KB} ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    kadapt("adapt", KB)
    seconds = time.perf_counter() - started
    reported = json.loads(kadapt("report", KB, "--json"))
    report = json.loads(Path(reported["json"]).read_text())
    served = {(row["mode"], row["kind"]): row for row in (report.get("served") or {}).get("results", [])}
    rows = [
        {
            "mode": row["mode"],
            "kind": row["kind"],
            "mc": _cell(row),
            "served": _cell(served.get((row["mode"], row["kind"]))),
        }
        for row in report.get("results", [])
    ]
    return {
        "revision": revision(code),
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "adapt_seconds": round(seconds, 1),
        "stage_seconds": report.get("stage_seconds", {}),
        "seconds_by_part": {
            mode: detail["seconds_by_part"]
            for mode, detail in (report.get("details") or {}).items()
            if detail.get("seconds_by_part")
        },
        "accuracy": rows,
        "forgetting": forgetting(report),
        "decision": reported["decision"]["mode"],
    }


def forgetting(report: dict) -> dict[str, dict]:
    """Per adapter mode, its general questions answered right: routed as served, and by the adapter alone."""
    kept = ("questions", "base_accuracy", "adapter_accuracy", "adapter_alone_accuracy")
    return {
        mode: {key: detail["forgetting"].get(key) for key in kept}
        for mode, detail in (report.get("details") or {}).items()
        if detail.get("forgetting")
    }


def revision(code: Path) -> str:
    """The commit ``code`` is checked out at, "+changes" when its tracked files differ from it."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=code, capture_output=True, text=True)
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=code).returncode != 0
    return head.stdout.strip() + ("+changes" if dirty else "")


def _cell(row: dict | None) -> list[float] | None:
    return [row["accuracy"], row["ci_low"], row["ci_high"]] if row else None


def _share(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "-"  # an older revision may not measure it


def _text(cell: list[float] | None) -> str:
    return f"{cell[0]:.2f} [{cell[1]:.2f}-{cell[2]:.2f}]" if cell else "-"


def print_config(name: str, result: dict) -> None:
    stages = ", ".join(f"{mode} {value:.0f} s" for mode, value in result["stage_seconds"].items())
    how = f"reused: measured at {result.get('measured_at', '?')}" if result.get("reused") else "measured now"
    print(
        f"\n{name} ({result.get('revision', '?')}, {how}): kadapt adapt {result['adapt_seconds']:.0f} s "
        f"(pilot: {stages}); decision {result['decision']}"
    )
    for mode, parts in (result.get("seconds_by_part") or {}).items():
        print(f"  {mode}: " + ", ".join(f"{part} {value:.0f} s" for part, value in parts.items()))
    for mode, found in (result.get("forgetting") or {}).items():
        print(
            f"  {mode} general questions right (of {found['questions']}): base {_share(found['base_accuracy'])}, "
            f"served (routed) {_share(found['adapter_accuracy'])}, adapter alone "
            f"{_share(found['adapter_alone_accuracy'])}"
        )
    print(f"  {'mode':<11}{'kind':<10}{'MC':>20}{'served':>20}")
    for row in result["accuracy"]:
        print(f"  {row['mode']:<11}{row['kind']:<10}{_text(row['mc']):>20}{_text(row['served']):>20}")


def overlaps(first: list[float] | None, other: list[float] | None) -> bool:
    return first is None or other is None or (other[1] <= first[2] and first[1] <= other[2])


def compare(results: dict[str, dict]) -> None:
    names = list(results)
    first = results[names[0]]
    reference = {(row["mode"], row["kind"]): row for row in first["accuracy"]}
    print(f"\nagainst {names[0]}:")
    for name in names[1:]:
        result = results[name]
        apart = [
            f"{row['mode']}/{row['kind']} {measure}"
            for row in result["accuracy"]
            for measure in ("mc", "served")
            if not overlaps(reference.get((row["mode"], row["kind"]), {}).get(measure), row[measure])
        ]
        print(
            f"  {name}: x{first['adapt_seconds'] / result['adapt_seconds']:.2f} faster "
            f"({first['adapt_seconds']:.0f} s -> {result['adapt_seconds']:.0f} s); "
            + ("every accuracy's interval overlaps" if not apart else "intervals apart: " + ", ".join(apart))
        )


NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")  # a configuration's name is a folder under OUT


def named_settings(parser: argparse.ArgumentParser, given: list[str]) -> dict[str, dict[str, str]]:
    """--set NAME:KADAPT_VAR=VALUE options as {name: {variable: value}}; only KADAPT_ variables, and names of
    configurations of their own (a plain word: it names a folder that is emptied)."""
    settings: dict[str, dict[str, str]] = {}
    for item in given:
        name, _, assignment = item.partition(":")
        variable, equals, value = assignment.partition("=")
        if not (NAME.fullmatch(name) and equals and re.fullmatch(r"KADAPT_[A-Z0-9_]+", variable)):
            parser.error(f"--set {item!r}: expected NAME:KADAPT_VAR=VALUE, NAME letters, digits, '-' and '_'")
        if name in BUILT_IN:
            parser.error(f"--set {item!r}: {name} is a built-in configuration; give the new one a name of its own")
        settings.setdefault(name, {})[variable] = value
    return settings


BUILT_IN = ("baseline", "current", "early-stop")


def _arguments() -> tuple[argparse.Namespace, list[str], dict[str, dict[str, str]], list[str], dict[str, dict]]:
    """(arguments, configurations, their --set settings, the reused ones, the earlier results.json's results)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="git revision of the baseline configuration (needed for `baseline`)")
    parser.add_argument(
        "--configs", default="baseline,current,early-stop", help="baseline, current, early-stop or a --set name"
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME:KADAPT_VAR=VALUE", help="a setting of configuration NAME"
    )
    parser.add_argument("--early-stop", type=float, default=0.02, help="KADAPT_ADAPT_EARLY_STOP_LOSS of early-stop")
    parser.add_argument(
        "--reuse", default="", help="configurations whose result is read from the last results.json, not measured"
    )
    args = parser.parse_args()
    configs = [name.strip() for name in args.configs.split(",") if name.strip()]
    settings = named_settings(parser, args.set)
    unknown = sorted(set(configs) - set(BUILT_IN) - set(settings))
    if unknown:
        parser.error(f"unknown configuration(s) {', '.join(unknown)}")
    reused = [name.strip() for name in args.reuse.split(",") if name.strip()]
    if "baseline" in configs and not args.baseline and "baseline" not in reused:
        parser.error("the baseline configuration needs --baseline REV (e.g. the last release's tag)")
    earlier = json.loads((OUT / "results.json").read_text()) if (OUT / "results.json").is_file() else {}
    missing = [name for name in reused if name not in earlier]
    if missing:
        parser.error(f"--reuse {', '.join(missing)}: not in {OUT / 'results.json'}; measure it first")
    return args, configs, settings, reused, earlier


def main() -> None:
    args, configs, settings, reused, earlier = _arguments()
    OUT.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="kadapt-bench-adapt-") as tmp:
        try:
            for name in configs:
                if name in reused:
                    results[name] = earlier[name] | {"reused": True}
                else:
                    if name == "baseline":
                        code, env = baseline_tree(args.baseline, Path(tmp)), {}
                    else:
                        code = REPO
                        env = {"KADAPT_ADAPT_EARLY_STOP_LOSS": str(args.early_stop)} if name == "early-stop" else {}
                        env |= settings.get(name, {})
                    results[name] = run_config(name, code, env)
                    # the earlier run's other configurations are kept: a later --reuse may still name them
                    (OUT / "results.json").write_text(json.dumps(earlier | results, indent=2))
                print_config(name, results[name])
        finally:
            if (Path(tmp) / "baseline").exists():
                subprocess.run(["git", "worktree", "remove", "--force", str(Path(tmp) / "baseline")], cwd=REPO)
    if len(results) > 1:
        compare(results)
    print(f"\nwritten: {OUT / 'results.json'}")


if __name__ == "__main__":
    main()
