"""Load: concurrent clients against the chat endpoint for a fixed time, streaming and not, over loopback.

    .venv/bin/python bench/load.py [--clients 32] [--seconds 60] [--stream-ratio 0.5] [--max-tokens 8]
        [--bad-key-clients 4] [--disconnect-clients 4] [--max-batch-size 16] [--max-chat-queue N]

Starts `kadapt serve` on 127.0.0.1 over the sample handbook KB (embedded model, ICL, an API key per request),
warms it up with one request per client, then runs --clients httpx clients that each send one request after
another until --seconds have passed (requests in flight then still finish). A --stream-ratio share of the
clients stream (SSE), the rest do not. Alongside them, from the same address:

- --bad-key-clients send made-up keys, one request every 50 ms: each must get 401, or 429 with Retry-After
  once the failure throttle refuses the address; and the valid clients' requests must never be refused by the
  throttle (everyone here shares 127.0.0.1, as colleagues share a NAT);
- --disconnect-clients start a stream and hang up after its first token, again and again;
- more clients than --max-batch-size: a bounded chat queue (KADAPT_MAX_CHAT_QUEUE, --max-chat-queue) may
  answer 429 or 503 with Retry-After; such refusals are expected answers, counted apart, never a failure.

Records every request's status, latency, time to first token (streams) and tokens, and samples the server's
resident memory every second.

Prints p50/p99 latency, requests/s and tokens/s, the status counts per kind of client, and the server's RSS:
idle before the run, mid-run and idle after it, its peak in each half and the trend of its 10-second peaks.
Exits 1 on any 5xx, any request that failed or was cut short (a refusal with Retry-After aside), a made-up key
that got anything but 401/429, a valid key refused by the failure throttle, or a second-half RSS peak more than
--max-growth-mb over the first half's (each batch of long prompts swings RSS by gigabytes, and single peaks by
a few hundred MB). tests/reliability/test_load.py runs a short version.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.serve import QUESTIONS  # noqa: E402 - the same questions as the latency benchmark

REFUSAL_STATUSES = (429, 503)  # a full chat queue, with Retry-After: an expected answer under overload
THROTTLE_CODE = "too_many_auth_failures"  # the failure throttle's 429, which a valid key must never get


@dataclass
class Outcome:
    stream: bool
    status: int  # 0 when the request failed before an answer
    seconds: float
    first_token: float | None = None
    tokens: int = 0
    prompt_tokens: int = 0
    error: str | None = None
    kind: str = "chat"  # chat (a valid key), bad-key (a made-up key), disconnect (hangs up mid-stream)
    retry_after: str | None = None
    code: str | None = None  # the error code of a refusal

    @property
    def refused(self) -> bool:
        """Turned away for load with Retry-After (a bounded queue), which is no failure."""
        return self.status in REFUSAL_STATUSES and self.retry_after is not None and self.code != THROTTLE_CODE


@dataclass
class LoadResult:
    clients: int
    seconds: float  # wall time, including the requests in flight at the deadline
    outcomes: list[Outcome]
    rss: list[tuple[float, int]] = field(default_factory=list)  # every second: (seconds since start, bytes)
    idle_before: int = 0  # the server's RSS with no request in flight, before and after the run
    idle_after: int = 0

    @property
    def statuses(self) -> Counter:
        return Counter(outcome.status for outcome in self.outcomes)

    @property
    def server_errors(self) -> int:
        return sum(1 for outcome in self.outcomes if outcome.status >= 500)

    def of_kind(self, kind: str) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if outcome.kind == kind]

    @property
    def refused(self) -> list[Outcome]:
        """Valid requests turned away with 429/503 and Retry-After (a full queue): expected, counted apart."""
        return [outcome for outcome in self.outcomes if outcome.kind != "bad-key" and outcome.refused]

    @property
    def throttled_valid(self) -> list[Outcome]:
        """Valid keys refused by the failure throttle: a lockout, always a failure."""
        return [o for o in self.outcomes if o.kind != "bad-key" and o.code == THROTTLE_CODE]

    @property
    def bad_key_answered(self) -> list[Outcome]:
        """Made-up keys that got anything but 401, or 429 with Retry-After."""
        return [
            o
            for o in self.of_kind("bad-key")
            if not (o.status == 401 or (o.status == 429 and o.retry_after is not None))
        ]

    @property
    def failed(self) -> list[Outcome]:
        """Valid requests that were not answered in full (a refusal with Retry-After aside), and made-up keys
        that got in or got a wrong error."""
        valid = [o for o in self.outcomes if o.kind != "bad-key" and not o.refused and (o.error or o.status != 200)]
        return valid + self.bad_key_answered

    def peak_mb(self, half: int) -> float:
        """The highest RSS sampled in the first (0) or second (1) half of the run."""
        values = [rss for t, rss in self.rss if (t >= self.seconds / 2) == bool(half)]
        return max(values) / 2**20 if values else float("nan")

    def rss_slope(self) -> float:
        """Trend of the RSS peaks of 10-second windows over the run, in MB per minute (a batch of long prompts
        raises RSS for its duration: single samples saw-tooth, window peaks show growth)."""
        windows: dict[int, int] = {}
        for t, rss in self.rss:
            windows[int(t // 10)] = max(windows.get(int(t // 10), 0), rss)
        if len(windows) < 2:
            return 0.0
        slope = statistics.linear_regression([w * 10 for w in windows], [rss / 2**20 for rss in windows.values()])
        return slope.slope * 60

    def growth_mb(self) -> float:
        """RSS growth: the second half's peak over the first half's. (Idle RSS is reported, not judged: how much
        freed memory the allocator hands back to the system after a batch varies by a gigabyte.)"""
        return self.peak_mb(1) - self.peak_mb(0)


def rss_bytes(pid: int) -> int:
    try:
        import psutil
    except ImportError:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmRSS for process {pid}") from None
    return psutil.Process(pid).memory_info().rss


def _note_error(outcome: Outcome, response, text: str) -> None:
    outcome.error = text[:300]
    outcome.retry_after = response.headers.get("retry-after")
    try:
        outcome.code = json.loads(text)["error"].get("code")
    except (ValueError, KeyError, TypeError, AttributeError):
        outcome.code = None


async def one_request(
    client,
    url: str,
    headers: dict,
    question: str,
    stream: bool,
    max_tokens: int,
    *,
    hang_up: bool = False,
    kind: str = "chat",
) -> Outcome:
    body = {
        "model": "handbook",
        "messages": [{"role": "user", "content": question}],
        "max_tokens": max_tokens,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    started = time.perf_counter()
    outcome = Outcome(stream, 0, 0.0, kind=kind)
    try:
        if not stream:
            response = await client.post(url + "/v1/chat/completions", json=body, headers=headers)
            outcome.status = response.status_code
            if response.status_code == 200:
                usage = response.json()["usage"]
                outcome.tokens, outcome.prompt_tokens = usage["completion_tokens"], usage["prompt_tokens"]
            else:
                _note_error(outcome, response, response.text)
        else:
            async with client.stream("POST", url + "/v1/chat/completions", json=body, headers=headers) as response:
                outcome.status = response.status_code
                if response.status_code != 200:
                    _note_error(outcome, response, (await response.aread()).decode(errors="replace"))
                else:
                    done = False
                    async for line in response.aiter_lines():
                        if not line.startswith("data: "):
                            continue
                        if line == "data: [DONE]":
                            done = True
                            continue
                        chunk = json.loads(line[6:])
                        if "error" in chunk:
                            outcome.error = chunk["error"].get("message", "error event")
                        elif chunk.get("usage"):
                            usage = chunk["usage"]
                            outcome.tokens, outcome.prompt_tokens = usage["completion_tokens"], usage["prompt_tokens"]
                        elif outcome.first_token is None and chunk["choices"][0]["delta"].get("content"):
                            outcome.first_token = time.perf_counter() - started
                            if hang_up:  # close the connection mid-stream, as a client that goes away
                                break
                    if hang_up and outcome.first_token is not None:
                        done = True
                    if not done:
                        outcome.error = outcome.error or "the stream ended without [DONE]"
    except Exception as exc:  # a dropped connection or a timeout is a finding, not a crash of the benchmark
        outcome.error = f"{type(exc).__name__}: {exc}"
    outcome.seconds = time.perf_counter() - started
    return outcome


async def run_load(
    url: str,
    *,
    clients: int,
    seconds: float,
    stream_ratio: float = 0.5,
    max_tokens: int = 8,
    headers: dict | None = None,
    pid: int | None = None,
    bad_key_clients: int = 0,
    disconnect_clients: int = 0,
) -> LoadResult:
    """``clients`` clients, each sending requests back to back until ``seconds`` have passed; beside them
    ``bad_key_clients`` sending made-up keys and ``disconnect_clients`` hanging up after the first token."""
    import httpx

    headers = headers or {}
    streaming = round(clients * stream_ratio)
    outcomes: list[Outcome] = []
    result = LoadResult(clients, 0.0, outcomes)
    if pid:
        await asyncio.sleep(2.0)  # as after the run: the buffers of a previous batch are released
        result.idle_before = rss_bytes(pid)
    started = time.perf_counter()
    deadline = started + seconds
    stop_sampling = asyncio.Event()

    async def sample() -> None:
        while True:
            result.rss.append((time.perf_counter() - started, rss_bytes(pid)))
            try:
                await asyncio.wait_for(stop_sampling.wait(), timeout=1.0)
                return
            except TimeoutError:
                pass

    async def worker(index: int, client) -> None:
        count = 0
        while count == 0 or time.perf_counter() < deadline:  # at least one request per client
            question = QUESTIONS[(index + count) % len(QUESTIONS)]
            outcomes.append(await one_request(client, url, headers, question, index < streaming, max_tokens))
            count += 1

    async def guesser(index: int, client) -> None:
        count = 0
        while count == 0 or time.perf_counter() < deadline:
            made_up = {"Authorization": f"Bearer kad_{secrets.token_hex(6)}_{secrets.token_urlsafe(24)}"}
            question = QUESTIONS[(index + count) % len(QUESTIONS)]
            outcomes.append(await one_request(client, url, made_up, question, False, max_tokens, kind="bad-key"))
            count += 1
            await asyncio.sleep(0.05)  # wrong keys are cheap to refuse: this keeps them from hogging the CPU

    async def leaver(index: int, client) -> None:
        count = 0
        while count == 0 or time.perf_counter() < deadline:
            question = QUESTIONS[(index + count) % len(QUESTIONS)]
            outcomes.append(
                await one_request(client, url, headers, question, True, max_tokens, hang_up=True, kind="disconnect")
            )
            count += 1

    total = clients + bad_key_clients + disconnect_clients
    limits = httpx.Limits(max_connections=total + 4, max_keepalive_connections=total + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        sampler = asyncio.create_task(sample()) if pid else None
        await asyncio.gather(
            *(worker(index, client) for index in range(clients)),
            *(guesser(index, client) for index in range(bad_key_clients)),
            *(leaver(index, client) for index in range(disconnect_clients)),
        )
        result.seconds = time.perf_counter() - started
        stop_sampling.set()
        if sampler:
            await sampler
            await asyncio.sleep(2.0)  # the last batch's buffers are released
            result.idle_after = rss_bytes(pid)
    return result


def percentile(values: list[float], q: int) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def report(result: LoadResult) -> list[str]:
    """The figures, one line each."""
    lines = []
    chat = result.of_kind("chat")
    for label, chosen in (
        ("all", chat),
        ("streaming", [o for o in chat if o.stream]),
        ("non-streaming", [o for o in chat if not o.stream]),
    ):
        answered = [o.seconds for o in chosen if o.status == 200 and not o.error]
        lines.append(
            f"{label:<14} {len(chosen):>5} requests  p50 {percentile(answered, 50):6.2f} s  "
            f"p99 {percentile(answered, 99):6.2f} s"
        )
    first = [o.first_token for o in chat if o.first_token is not None]
    tokens = sum(o.tokens for o in chat)
    prompts = [o.prompt_tokens for o in chat if o.prompt_tokens]
    lines.append(f"time to first token (streams): p50 {percentile(first, 50):.2f} s  p99 {percentile(first, 99):.2f} s")
    lines.append(
        f"throughput: {len(chat) / result.seconds:.2f} requests/s, {tokens / result.seconds:.1f} "
        f"completion tokens/s over {result.seconds:.0f} s; prompts of {statistics.mean(prompts or [0]):.0f} tokens "
        f"on average ({sum(prompts) / result.seconds:.0f} prompt tokens/s)"
    )
    for kind in ("chat", "bad-key", "disconnect"):
        chosen = result.of_kind(kind)
        if chosen:
            counts = Counter(o.status for o in chosen)
            statuses = ", ".join(f"{status or 'no answer'}: {count}" for status, count in sorted(counts.items()))
            lines.append(f"{kind:<10} statuses: {statuses}")
    lines.append(
        f"5xx: {result.server_errors}; refused for load with Retry-After (429/503): {len(result.refused)}; "
        f"valid keys refused by the failure throttle: {len(result.throttled_valid)}; made-up keys answered other "
        f"than 401/429: {len(result.bad_key_answered)}; failed or cut short: {len(result.failed)}"
    )
    if result.rss:
        middle = min(result.rss, key=lambda sample: abs(sample[0] - result.seconds / 2))[1]
        lines.append(
            f"server RSS: idle before {result.idle_before / 2**20:.0f} MB, mid-run {middle / 2**20:.0f} MB, "
            f"idle after {result.idle_after / 2**20:.0f} MB; peak {result.peak_mb(0):.0f} MB in the first half, "
            f"{result.peak_mb(1):.0f} MB in the second; trend of 10-s peaks {result.rss_slope():+.1f} MB/min"
        )
    for outcome in result.failed[:5]:
        lines.append(f"  ! {outcome.kind} {'stream' if outcome.stream else 'plain'} {outcome.status}: {outcome.error}")
    return lines


def warm_up(url: str, headers: dict, clients: int, max_tokens: int) -> None:
    """One request per client, so that loading the model and the first full batch's allocations are not part
    of the measurement."""
    asyncio.run(run_load(url, clients=clients, seconds=0.0, max_tokens=max_tokens, headers=headers))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--stream-ratio", type=float, default=0.5, help="share of the clients that stream")
    parser.add_argument("--max-tokens", type=int, default=8, help="completion tokens per request")
    parser.add_argument("--max-batch-size", type=int, default=None, help="KADAPT_MAX_BATCH_SIZE of the server")
    parser.add_argument("--max-chat-queue", type=int, default=None, help="KADAPT_MAX_CHAT_QUEUE of the server")
    parser.add_argument("--bad-key-clients", type=int, default=4, help="clients sending made-up keys")
    parser.add_argument("--disconnect-clients", type=int, default=4, help="clients hanging up mid-stream")
    parser.add_argument(
        "--max-growth-mb",
        type=float,
        default=256.0,
        help="allowed growth of the RSS peak, second half over first",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kadapt-load-") as tmp:
        for name in [name for name in os.environ if name.startswith("KADAPT_") and name != "KADAPT_MODELS_DIR"]:
            del os.environ[name]
        os.environ.update({"KADAPT_DATA_DIR": str(Path(tmp) / "data"), "KADAPT_ALLOWED_ROOTS": str(REPO / "samples")})
        os.environ.setdefault("KADAPT_MODELS_DIR", str(REPO / ".kadapt" / "models"))
        if args.max_batch_size:
            os.environ["KADAPT_MAX_BATCH_SIZE"] = str(args.max_batch_size)
        if args.max_chat_queue:
            os.environ["KADAPT_MAX_CHAT_QUEUE"] = str(args.max_chat_queue)
        from tests.conftest import Server, build_handbook

        from kadapt.auth import create_key
        from kadapt.catalog import open_catalog
        from kadapt.settings import get_settings

        catalog = open_catalog()
        build_handbook(catalog, get_settings(), reader_groups=["staff"])
        key = create_key(catalog, get_settings(), role="reader", groups=["staff"], name="load")[0]
        headers = {"Authorization": f"Bearer {key}"}
        server = Server(dict(os.environ), "--preload", "smollm2-135m")
        try:
            warm_up(server.url, headers, args.clients, args.max_tokens)
            print(
                f"{args.clients} clients ({args.stream_ratio:.0%} streaming), {args.bad_key_clients} with made-up "
                f"keys, {args.disconnect_clients} hanging up mid-stream, for {args.seconds:.0f} s, "
                f"max_tokens={args.max_tokens}, {os.cpu_count()} CPU cores, loopback",
                flush=True,
            )
            result = asyncio.run(
                run_load(
                    server.url,
                    clients=args.clients,
                    seconds=args.seconds,
                    stream_ratio=args.stream_ratio,
                    max_tokens=args.max_tokens,
                    headers=headers,
                    pid=server.process.pid,
                    bad_key_clients=args.bad_key_clients,
                    disconnect_clients=args.disconnect_clients,
                )
            )
        finally:
            server.stop()
    print("\n".join(report(result)))
    growth = result.growth_mb()
    problems = []
    if result.server_errors:
        problems.append(f"{result.server_errors} server errors")
    if result.throttled_valid:
        problems.append(f"{len(result.throttled_valid)} requests with a valid key refused by the failure throttle")
    if result.bad_key_answered:
        problems.append(f"{len(result.bad_key_answered)} made-up keys answered other than 401/429")
    if result.failed:
        problems.append(f"{len(result.failed)} requests failed or were cut short")
    if growth > args.max_growth_mb:
        problems.append(f"the RSS peak grew {growth:.0f} MB in the second half (limit {args.max_growth_mb:.0f} MB)")
    print("FAIL: " + "; ".join(problems) if problems else "OK: no 5xx, every request answered, memory flat")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
