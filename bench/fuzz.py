"""API fuzzing: schemathesis against the OpenAPI schema, every operation, with API keys.

    .venv/bin/python bench/fuzz.py [--examples 200] [--seed 0] [--modes positive,negative]

Builds the app with ``create_app()`` over a fresh data dir holding the sample handbook KB (synced for real)
and loads its OpenAPI schema through ASGI. For every operation, Hypothesis draws ``--examples`` requests per
generation mode (positive: valid by the schema; negative: invalid on purpose) and sends them in-process.
Each request goes out as an admin, an editor, a reader, a reader and an editor of another group, an editor in
the KBs' reader group, with a made-up key of the right shape, or with whatever credentials the fuzzer made up;
path parameters and the chat ``model`` name the real KB, a scratch KB (the target of deletions, recreated
when gone), a real source and job, or what the fuzzer made up. Chat requests on the real KB generate a few
tokens with the embedded model. Jobs that the routes start are left queued (a held runner): the routes, not
hundreds of training runs, are under test here; bench/crash.py runs the jobs.

Checks on every response: no server error (5xx), a status code the schema declares, a declared content
type, a body that matches the declared schema; invalid requests must be refused with a 4xx, and valid ones
must get past request validation. An authorization oracle knows who sent each request and what they may do
with the KB (or job) it names: any 2xx to a made-up key, to a caller who may not read the KB named in the path
or the chat model, to one who may not manage it on a route that changes it (or lists its sources), or to a
non-admin on the audit log, is a failure. Prints one
row per operation and exits 1 on any failure. tests/api/test_fuzz.py runs a few examples per operation.

``.ci/scaleout .venv/bin/python bench/fuzz.py`` fuzzes the app on a PostgreSQL catalog and a Chroma server
(fresh databases on the servers that script starts), where the database's own rules differ from SQLite's.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kadapt.hookspecs import hookimpl

REPO = Path(__file__).resolve().parent.parent
PRINCIPALS = {
    "admin": ("admin", []),
    "editor": ("editor", ["hr"]),  # owns the KBs
    "reader": ("reader", ["staff"]),  # reads them
    "staff-editor": ("editor", ["staff"]),  # an editor in a reader group: reads, never manages
    "outsider": ("reader", ["finance"]),  # no access at all
    "outside-editor": ("editor", ["finance"]),
}
# the groups of the KBs the fuzzer aims at (readers, owners), as prepare() and _scratch_source() create them
KB_GROUPS = {"reader": {"staff"}, "owner": {"hr"}}
KB = "handbook"
SCRATCH = "scratch"
CHAT_TOKENS = 3  # most completion tokens a fuzzed chat on the real KB may ask for
HELD_RUNNER = "held"
# limits that would otherwise answer most of a fuzz run with 429: made-up keys count as failed sign-ins from
# one address, and held jobs stay queued
FUZZ_SETTINGS = {
    "KADAPT_AUTH_FAILURE_LIMIT": "1000000000",
    "KADAPT_AUTH_FAILURE_ADDRESS_LIMIT": "1000000000",
    "KADAPT_MAX_CONCURRENT_JOBS": "1000000000",
}


class HeldJobs:
    """A job runner that leaves every submitted job queued."""

    name = HELD_RUNNER
    description = "Leaves jobs queued (API fuzzing)."

    def submit(self, catalog, job_id: str, *, wait: bool = True, listeners=None) -> None:
        return None


class HeldJobsPlugin:
    @hookimpl
    def register_job_runners(self, register) -> None:
        register(HeldJobs())


@dataclass
class Fixtures:
    """What the fuzzer may aim at: the real KB, the scratch KB's source, a job, and a key per principal."""

    app: Any
    catalog: Any
    settings: Any
    keys: dict[str, str]
    job_id: str
    docs: Path
    schema: Any = None  # the app's schema, loaded through ASGI on first use

    def load_schema(self):
        import schemathesis

        if self.schema is None:
            self.schema = schemathesis.openapi.from_asgi("/openapi.json", self.app)
        return self.schema


@dataclass
class OperationReport:
    label: str
    examples: int = 0
    statuses: Counter = field(default_factory=Counter)
    failures: dict[str, str] = field(default_factory=dict)  # one per (check, status): a reproduction
    seconds: float = 0.0


def prepare(root: Path) -> Fixtures:
    """The app over a fresh data dir (``KADAPT_*`` variables must already point there)."""
    from tests.conftest import build_handbook
    from tests.estimates import make_estimates

    from kadapt.api import create_app
    from kadapt.auth import create_key
    from kadapt.catalog import open_catalog
    from kadapt.jobs import create_job
    from kadapt.kbs import get_kb
    from kadapt.policy import decide_kb
    from kadapt.settings import get_settings

    settings = get_settings()
    catalog = open_catalog(settings)
    build_handbook(
        catalog, settings, slug=KB, reader_groups=sorted(KB_GROUPS["reader"]), owner_groups=sorted(KB_GROUPS["owner"])
    )
    decide_kb(catalog, KB, estimates=make_estimates())  # so the decision and report routes have data to show
    docs = root / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "leave.md").write_text("# Leave\n\nEmployees get 27 days of leave.\n")
    keys = {
        name: create_key(catalog, settings, role=role, groups=groups, name=name)[0]
        for name, (role, groups) in PRINCIPALS.items()
    }
    job_id = create_job(catalog, "sync", kb_id=get_kb(catalog, KB).id, params={"kb": KB})
    return Fixtures(create_app(settings), catalog, settings, keys, job_id, docs)


def _scratch_source(fixtures: Fixtures) -> int:
    """The scratch KB's source id, creating the KB and its source when a fuzzed DELETE removed them."""
    from kadapt.errors import NotFound
    from kadapt.kbs import add_source, create_kb, get_kb, list_sources

    try:
        get_kb(fixtures.catalog, SCRATCH)
    except NotFound:
        create_kb(
            fixtures.catalog,
            SCRATCH,
            reader_groups=sorted(KB_GROUPS["reader"]),
            owner_groups=sorted(KB_GROUPS["owner"]),
        )
    sources = list_sources(fixtures.catalog, SCRATCH)
    if sources:
        return sources[0].id
    return add_source(fixtures.catalog, fixtures.settings, SCRATCH, "files", {"path": str(fixtures.docs)}).id


def aim(case, fixtures: Fixtures, data) -> None:
    """Point a generated case at real objects some of the time (``data`` is Hypothesis's draw source).

    A part the fuzzer made invalid on purpose (negative mode) is left as it is: replacing it would turn the
    request valid, and its acceptance would look like a failure to reject invalid data."""
    from hypothesis import strategies as st
    from schemathesis.core.parameters import ParameterLocation

    def invalid(location: ParameterLocation) -> bool:
        return case.meta is not None and case.meta.is_negative_at(location)

    callers = ["admin", "admin", "editor", "reader", "staff-editor", "outsider", "outside-editor", "forged", "made-up"]
    who = data.draw(st.sampled_from(callers), label="principal")
    if who != "made-up" and not invalid(ParameterLocation.HEADER):
        key = FORGED_KEY if who == "forged" else fixtures.keys[who]
        case.headers = {
            name: value
            for name, value in (case.headers or {}).items()
            if name.lower() not in ("authorization", "x-api-key")
        } | {"Authorization": f"Bearer {key}"}
    parameters = case.path_parameters if case.path_parameters and not invalid(ParameterLocation.PATH) else {}
    if "slug" in parameters:
        deleting = case.method.upper() == "DELETE" and case.path == "/v1/kbs/{slug}"
        target = data.draw(st.sampled_from(["made-up", KB, KB, SCRATCH]), label="slug")
        if target != "made-up":
            parameters["slug"] = SCRATCH if deleting else target
    if parameters.get("slug") == SCRATCH:
        source_id = _scratch_source(fixtures)
        if "source_id" in parameters and data.draw(st.booleans(), label="real source"):
            parameters["source_id"] = source_id
    if "job_id" in parameters and data.draw(st.booleans(), label="real job"):
        parameters["job_id"] = fixtures.job_id
    if case.path == "/v1/chat/completions" and isinstance(case.body, dict) and not invalid(ParameterLocation.BODY):
        if data.draw(st.sampled_from([True, True, False]), label="real KB"):
            case.body["model"] = KB
        if case.body.get("model") == KB:
            # generation on 2 CPU cores is slow: a few tokens, unless the request is over the limit anyway
            for name in ("max_tokens", "max_completion_tokens"):
                value = case.body.get(name)
                if value is None or (isinstance(value, int) and 0 < value <= fixtures.settings.max_completion_tokens):
                    case.body[name] = min(value or CHAT_TOKENS, CHAT_TOKENS) if name == "max_tokens" else None


FORGED_KEY = "kad_0123456789ab_" + "A" * 32  # shaped like a key, issued to no one


def _caller(case, fixtures: Fixtures) -> str | None:
    """The principal whose key the request carries (the one that counts: Authorization over X-API-Key, as the
    server reads them), or None for a made-up key or none."""
    headers = {name.lower(): value for name, value in (case.headers or {}).items() if isinstance(value, str)}
    key = headers.get("x-api-key")
    if "authorization" in headers:
        scheme, _, value = headers["authorization"].partition(" ")
        key = value.strip() if scheme.lower() == "bearer" else headers["authorization"].strip()
    return next((name for name, issued in fixtures.keys.items() if key and issued == key), None)


def _may(principal: str, right: str) -> bool:
    """What ``principal`` may do with the fuzzer's KBs (``read`` or ``manage``), from their groups alone."""
    role, groups = PRINCIPALS[principal]
    if role == "admin":
        return True
    if right == "read":
        return bool(set(groups) & (KB_GROUPS["reader"] | KB_GROUPS["owner"]))
    return role == "editor" and bool(set(groups) & KB_GROUPS["owner"])


def authorization_oracle(fixtures: Fixtures):
    """A schemathesis check (``(ctx, response, case)``, like those of ``@schemathesis.check``) that knows who
    made each call and what they may do: a 2xx to a made-up key on a keyed route, to a caller who may not read
    the KB (or the job's KB) the request names, to one who may not manage it on a route that changes it or
    lists its sources, or to a non-admin on the audit log, fails. It is given to each run rather than registered
    globally: it needs the fuzzer's own keys."""
    spec = fixtures.app.openapi()["paths"]

    def keyed(case) -> bool:
        parameters = spec.get(case.path, {}).get(case.method.lower(), {}).get("parameters", [])
        return any(p["in"] == "header" and p["name"].lower() == "authorization" for p in parameters)

    def authorized_only(ctx, response, case) -> None:
        if not 200 <= response.status_code < 300 or not keyed(case):
            return
        caller = _caller(case, fixtures)
        if caller is None:
            raise AssertionError(f"a made-up key got {response.status_code} from {case.method} {case.path}")
        method, path = case.method.upper(), case.path
        parameters = case.path_parameters or {}
        names_kb = parameters.get("slug") in (KB, SCRATCH)
        if path == "/v1/chat/completions" and isinstance(case.body, dict):
            names_kb = case.body.get("model") in (KB, SCRATCH)
        if path.startswith("/v1/jobs/") and parameters.get("job_id") == fixtures.job_id:
            names_kb = True  # the job is the real KB's
        if names_kb:
            changes = method not in ("GET", "HEAD") and path != "/v1/chat/completions"
            right = "manage" if changes or path.endswith("/sources") else "read"
            if not _may(caller, right):
                raise AssertionError(
                    f"{caller} ({PRINCIPALS[caller][0]} of {PRINCIPALS[caller][1]}) may not {right} the KB of "
                    f"{method} {path} {parameters}, yet got {response.status_code}"
                )
        if path == "/v1/audit" and PRINCIPALS[caller][0] != "admin":
            raise AssertionError(f"{caller} read the audit log ({response.status_code}); only admins may")

    return authorized_only


def valid_request_passes_validation(ctx, response, case) -> None:
    """A request the schema allows (positive mode) must get past request validation: only a rule the schema
    cannot state (an unknown probe kind, a KB over a limit) may refuse it."""
    if response.status_code != 400:
        return
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return
    if error.get("code") == "invalid_request":
        raise AssertionError(f"a request valid by the schema was refused: {error.get('message')}")


def _base_checks() -> list:
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    return [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def _checks(mode) -> list:
    from schemathesis.specs.openapi.checks import negative_data_rejection

    checks = _base_checks()
    return checks + ([negative_data_rejection] if mode.is_negative else [valid_request_passes_validation])


def fuzz_operation(operation, mode, fixtures: Fixtures, examples: int, seed: int | None) -> OperationReport:
    """Send ``examples`` generated requests to one operation and run the checks on every response."""
    import hypothesis
    from hypothesis import strategies as st
    from schemathesis.core.failures import FailureGroup

    report = OperationReport(f"{operation.method.upper()} {operation.path} [{mode.value}]")
    strategy = operation.as_strategy(generation_mode=mode)
    checks = [*_checks(mode), authorization_oracle(fixtures)]

    @hypothesis.settings(
        max_examples=examples,
        derandomize=seed is None,
        deadline=None,
        database=None,
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(data=st.data())
    def run(data) -> None:
        case = data.draw(strategy, label="case")
        aim(case, fixtures, data)
        try:
            response = case.call()
        except Exception as exc:  # the app raised past its error handlers: a server error
            report.examples += 1
            report.statuses[500] += 1
            key = f"Unhandled {type(exc).__name__} (500)"
            if key not in report.failures:
                report.failures[key] = f"{str(exc)[:300]}\n    {case.as_curl_command()[:800]}"
            return
        report.examples += 1
        report.statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=checks)
        except FailureGroup as group:
            for failure in group.exceptions:
                key = f"{failure.title} ({response.status_code})"
                if key not in report.failures:
                    report.failures[key] = f"{failure.message.strip()[:600]}\n    {case.as_curl_command()[:800]}"

    if seed is not None:
        run = hypothesis.seed(seed)(run)
    started = time.perf_counter()
    with contextlib.suppress(hypothesis.errors.Unsatisfiable):  # no invalid request exists for some operations
        run()
    report.seconds = time.perf_counter() - started
    return report


def replay(fixtures: Fixtures, method: str, path: str, *, principal: str = "admin", **parts) -> tuple[int, list[str]]:
    """Send one given request (``parts``: path_parameters, query, body) as ``principal`` and run the checks
    that hold for any request on its answer; return the status and the titles of the failed checks."""
    from schemathesis.core.failures import FailureGroup

    headers = {"Authorization": f"Bearer {fixtures.keys[principal]}"}
    case = fixtures.load_schema()[path][method.lower()].Case(headers=headers, **parts)
    response = case.call()
    try:
        case.validate_response(response, checks=[*_base_checks(), authorization_oracle(fixtures)])
    except FailureGroup as group:
        return response.status_code, [failure.title for failure in group.exceptions]
    return response.status_code, []


def fuzz(fixtures: Fixtures, examples: int, modes: list[str], seed: int | None = None, progress=None):
    """Fuzz every operation of the app's schema; yield one report per operation and mode."""
    from schemathesis import GenerationMode

    schema = fixtures.load_schema()
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        for mode in modes:
            report = fuzz_operation(operation, GenerationMode(mode), fixtures, examples, seed)
            if progress:
                progress(report)
            yield report


def held_jobs():
    """Register the held job runner (select it with ``KADAPT_JOB_RUNNER=held``); returns what undoes it."""
    from kadapt.plugins import get_plugins

    plugins = get_plugins()
    name = plugins.register(HeldJobsPlugin(), name="fuzz-held-jobs")
    return lambda: plugins.unregister(name)


def print_row(report: OperationReport) -> None:
    statuses = " ".join(f"{status}:{count}" for status, count in sorted(report.statuses.items()))
    print(f"{report.label:<52} {report.examples:>5} {report.seconds:>7.1f}  {statuses}", flush=True)
    for title, reproduction in report.failures.items():
        print(f"    ! {title}\n    {reproduction}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=200, help="examples per operation and generation mode")
    parser.add_argument("--seed", type=int, default=None, help="Hypothesis seed (default: derandomized)")
    parser.add_argument("--modes", default="positive,negative")
    args = parser.parse_args()
    from tests import servers
    from tests.conftest import group_allowances

    postgres, chroma = os.environ.get("KADAPT_TEST_POSTGRES_URL"), os.environ.get("KADAPT_TEST_CHROMA_URL")
    with tempfile.TemporaryDirectory(prefix="kadapt-fuzz-") as tmp, contextlib.ExitStack() as cleanup:
        for name in [name for name in os.environ if name.startswith("KADAPT_") and name != "KADAPT_MODELS_DIR"]:
            del os.environ[name]
        os.environ.update({"KADAPT_DATA_DIR": str(Path(tmp) / "data"), "KADAPT_ALLOWED_ROOTS": f"{REPO},{tmp}"})
        # the fuzzed KBs are owned by groups, which read only their own roots
        os.environ["KADAPT_GROUP_ALLOWANCES"] = group_allowances([REPO, Path(tmp)])
        os.environ.update(FUZZ_SETTINGS | {"KADAPT_JOB_RUNNER": HELD_RUNNER})
        os.environ.setdefault("KADAPT_MODELS_DIR", str(REPO / ".kadapt" / "models"))
        if postgres:  # under .ci/scaleout
            database = servers.create_postgres_database(postgres)
            cleanup.callback(servers.drop_postgres_database, postgres, database)
            os.environ["KADAPT_CATALOG_URL"] = servers.database_url(postgres, database)
        if chroma:
            database = servers.create_chroma_database(chroma)
            cleanup.callback(servers.drop_chroma_database, chroma, database)
            os.environ.update({"KADAPT_CHROMA_URL": chroma, "KADAPT_CHROMA_DATABASE": database})
        print(
            f"catalog: {'PostgreSQL' if postgres else 'SQLite'}; vectors: {'Chroma server' if chroma else 'embedded'}"
        )
        undo = held_jobs()
        try:
            fixtures = prepare(Path(tmp))
            print(f"{args.examples} examples per operation and mode ({args.modes}), seed {args.seed or 'fixed'}")
            print(f"{'operation':<52} {'sent':>5} {'s':>7}  statuses")
            started = time.perf_counter()
            reports = list(fuzz(fixtures, args.examples, args.modes.split(","), args.seed, print_row))
        finally:
            undo()
    operations = len({report.label.rsplit(" [", 1)[0] for report in reports})
    failures = sum(len(report.failures) for report in reports)
    statuses = sum((report.statuses for report in reports), Counter())
    print(
        f"\n{operations} operations x {len(args.modes.split(','))} modes, "
        f"{sum(r.examples for r in reports)} requests in {time.perf_counter() - started:.0f} s; "
        f"5xx: {sum(n for s, n in statuses.items() if s >= 500)}; distinct failures: {failures}"
    )
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
