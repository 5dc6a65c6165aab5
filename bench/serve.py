"""Chat serving throughput and latency at 1, 4 and 16 concurrent streaming clients.

    .venv/bin/python bench/serve.py [--max-tokens 32] [--requests 32]

Starts `kadapt serve` on 127.0.0.1 over the sample handbook KB (embedded model, retrieval ICL), then for
each concurrency level runs that many streaming clients until --requests requests are done. Prints
completion tokens/s over the level's wall time, and p50/p95 of time to first token and of total latency.
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
        "ttft_p95": pct(first, 95),
        "p50": pct(total, 50),
        "p95": pct(total, 95),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--requests", type=int, default=32, help="requests per concurrency level")
    parser.add_argument("--levels", default="1,4,16")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kadapt-bench-") as tmp:
        os.environ.update(
            {
                "KADAPT_DATA_DIR": str(Path(tmp) / "data"),
                "KADAPT_ALLOWED_ROOTS": str(REPO / "samples"),
                "KADAPT_AUTH_DISABLED": "true",
            }
        )
        os.environ.setdefault("KADAPT_MODELS_DIR", str(REPO / ".kadapt" / "models"))
        from tests.conftest import Server, build_handbook

        from kadapt.catalog import open_catalog
        from kadapt.settings import get_settings

        build_handbook(open_catalog(), get_settings())
        server = Server(dict(os.environ), "--preload", "smollm2-135m")
        try:
            asyncio.run(level(server.url, 1, 1, 4))  # warm-up
            print(
                f"max_tokens={args.max_tokens}, {args.requests} streaming requests per level, "
                f"{os.cpu_count()} CPU cores"
            )
            print(
                f"{'clients':>7} {'requests':>8} {'tok/s':>8} {'TTFT p50':>9} {'TTFT p95':>9} {'p50 s':>7} {'p95 s':>7}"
            )
            baseline = None
            for clients in (int(value) for value in args.levels.split(",")):
                result = asyncio.run(level(server.url, clients, args.requests, args.max_tokens))
                baseline = baseline or result["tok_s"]
                print(
                    f"{result['clients']:>7} {result['requests']:>8} {result['tok_s']:>8.1f} "
                    f"{result['ttft_p50']:>9.2f} {result['ttft_p95']:>9.2f} {result['p50']:>7.2f} "
                    f"{result['p95']:>7.2f}   throughput x{result['tok_s'] / baseline:.2f} vs 1 client"
                )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
