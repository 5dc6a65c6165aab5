"""Chat serving throughput and latency at 1, 8 and 32 concurrent streaming clients: static vs continuous batching.

    .venv/bin/python bench/serve.py [--max-tokens 32] [--requests 32] [--levels 1,8,32]
        [--modes static,continuous,continuous+prefix]

Starts `kadapt serve` on 127.0.0.1 over the sample handbook KB (embedded model, retrieval ICL) once per mode, then
for each concurrency level runs that many streaming clients until --requests requests (at least two per client)
are done. Modes:

- `static`: each batch runs to its end before the next starts, no prefix store (KADAPT_CONTINUOUS_BATCHING=false,
  KADAPT_PREFIX_CACHE_MB=0): the serving of earlier releases;
- `continuous`: requests join the batch under way and leave it when done, no prefix store;
- `continuous+prefix`: the default, with the system prompt and retrieved documents' key/value cache kept across
  requests. The clients cycle through six handbook questions, so after the first round every prompt's documents
  are in the store: the figure of a KB asked the same things often, or of whole-KB icl (one document block).

Prints, per mode and level, completion tokens/s over the level's wall time, p50/p99 of time to first token and of
total latency, and each mode's p50 and throughput as a ratio of static's at the same level.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

QUESTIONS = [
    "How many days of paid annual leave do I get?",
    "What is the hotel limit in London?",
    "Who do I call when my laptop is stolen?",
    "How much does the company pay into my pension?",
    "Where is the Lisbon office?",
    "When are expense claims due?",
]


async def one_request(client, url: str, question: str, max_tokens: int) -> tuple[float, float, int]:
    body = {
        "model": "handbook",
        "messages": [{"role": "user", "content": question}],
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first = None
    tokens = 0
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {await response.aread()}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            elif chunk["choices"] and chunk["choices"][0]["delta"].get("content") and first is None:
                first = time.perf_counter() - started
    return first or 0.0, time.perf_counter() - started, tokens


async def level(url: str, clients: int, requests: int, max_tokens: int) -> dict:
    import httpx

    queue = list(range(requests))
    results = []

    async def worker(client) -> None:
        while queue:
            index = queue.pop()
            results.append(await one_request(client, url, QUESTIONS[index % len(QUESTIONS)], max_tokens))

    async with httpx.AsyncClient(timeout=600) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        wall = time.perf_counter() - started
    first = sorted(result[0] for result in results)
    total = sorted(result[1] for result in results)
    tokens = sum(result[2] for result in results)

    def pct(values, q):
        return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]

    return {
        "clients": clients,
        "requests": len(results),
        "tokens": tokens,
        "wall": wall,
        "tok_s": tokens / wall,
        "ttft_p50": pct(first, 50),
        "ttft_p99": pct(first, 99),
        "p50": pct(total, 50),
        "p99": pct(total, 99),
    }


MODES = {
    "static": {"KADAPT_CONTINUOUS_BATCHING": "false", "KADAPT_PREFIX_CACHE_MB": "0"},
    "continuous": {"KADAPT_CONTINUOUS_BATCHING": "true", "KADAPT_PREFIX_CACHE_MB": "0"},
    "continuous+prefix": {"KADAPT_CONTINUOUS_BATCHING": "true", "KADAPT_PREFIX_CACHE_MB": "256"},
}


def run_mode(mode: str, levels: list[int], args) -> dict[int, dict]:
    """Every level against one server started in ``mode``."""
    from tests.conftest import Server

    server = Server(dict(os.environ) | MODES[mode], "--preload", "smollm2-135m")
    try:
        asyncio.run(level(server.url, 1, 1, 4))  # warm-up
        results = {}
        for clients in levels:
            results[clients] = asyncio.run(level(server.url, clients, max(args.requests, 2 * clients), args.max_tokens))
            row = results[clients]
            print(
                f"{mode:>18} {clients:>7} {row['requests']:>8} {row['tok_s']:>8.1f} {row['ttft_p50']:>9.2f} "
                f"{row['ttft_p99']:>9.2f} {row['p50']:>7.2f} {row['p99']:>7.2f}",
                flush=True,
            )
        return results
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--requests", type=int, default=32, help="requests per concurrency level (at least 2 each)")
    parser.add_argument("--levels", default="1,8,32")
    parser.add_argument("--modes", default="static,continuous,continuous+prefix", help=", ".join(MODES))
    args = parser.parse_args()
    modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        parser.error(f"unknown mode(s) {', '.join(unknown)}: choose from {', '.join(MODES)}")
    levels = [int(value) for value in args.levels.split(",")]
    with tempfile.TemporaryDirectory(prefix="kadapt-bench-") as tmp:
        os.environ.update(
            {
                "KADAPT_DATA_DIR": str(Path(tmp) / "data"),
                "KADAPT_ALLOWED_ROOTS": str(REPO / "samples"),
                "KADAPT_AUTH_DISABLED": "true",
            }
        )
        os.environ.setdefault("KADAPT_MODELS_DIR", str(REPO / ".kadapt" / "models"))
        from tests.conftest import build_handbook

        from kadapt.catalog import open_catalog
        from kadapt.settings import get_settings

        build_handbook(open_catalog(), get_settings())
        print(f"max_tokens={args.max_tokens}, streaming clients, {os.cpu_count()} CPU cores")
        print(
            f"{'mode':>18} {'clients':>7} {'requests':>8} {'tok/s':>8} {'TTFT p50':>9} {'TTFT p99':>9} "
            f"{'p50 s':>7} {'p99 s':>7}"
        )
        results = {mode: run_mode(mode, levels, args) for mode in modes}
    if "static" in results:
        print("\nagainst static batching at the same level (p50 latency: static / mode; throughput: mode / static)")
        for mode in modes[1:] if modes[0] == "static" else modes:
            for clients in levels:
                base, row = results["static"][clients], results[mode][clients]
                print(
                    f"{mode:>18} {clients:>3} clients: p50 x{base['p50'] / row['p50']:.2f} lower, "
                    f"p99 x{base['p99'] / row['p99']:.2f} lower, throughput x{row['tok_s'] / base['tok_s']:.2f}"
                )


if __name__ == "__main__":
    main()
