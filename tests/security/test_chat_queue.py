"""The chat queue is bounded: past KADAPT_MAX_CHAT_QUEUE chats (or KADAPT_MAX_CHAT_PER_KEY for one key) a chat
gets 429 with Retry-After at once, never a server error, and the chats admitted are answered in full. Against a
real uvicorn on 127.0.0.1 and the real model, whose compute lock the test holds so that the admitted chats are
still in progress while the others arrive (no timing involved)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

import httpx
import pytest

QUESTION = {"role": "user", "content": "How many days of leave do employees get?"}


@pytest.fixture(scope="module")
def kb(env) -> str:
    from kadapt.kbs import add_source, create_kb
    from kadapt.sync import sync_kb

    create_kb(env.catalog, "queued", title="Leave", reader_groups=["staff"])
    add_source(env.catalog, env.settings, "queued", "files", {"path": str(env.docs)})
    sync_kb(env.catalog, "queued")
    return "queued"


@contextlib.contextmanager
def serve(app) -> Iterator[str]:
    import uvicorn

    from tests.conftest import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def ask(url: str, key: str, kb: str) -> httpx.Response:
    body = {"model": kb, "messages": [QUESTION], "max_tokens": 4}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=300)


def wait_for(futures, count: int) -> list:
    """The first ``count`` futures to finish (the others are held by the model's lock)."""
    done: set = set()
    while len(done) < count:
        finished, _ = wait(set(futures) - done, timeout=300, return_when=FIRST_COMPLETED)
        assert finished, f"only {len(done)} of {count} answers came back"
        done |= finished
    return [future.result() for future in done]


def assert_refused(response: httpx.Response, setting: str) -> None:
    assert response.status_code == 429, response.text
    assert int(response.headers["retry-after"]) > 0
    error = response.json()["error"]
    assert error["code"] == "chat_queue_full" and setting in error["message"]


def test_chats_past_the_queue_bound_get_429_and_the_admitted_ones_are_answered(env, kb):
    app = env.app(max_chat_queue=2)
    model = app.state.pool.get("smollm2-135m")  # loaded before the lock is taken
    key = env.keys["reader_member"]
    with serve(app) as url, ThreadPoolExecutor(8) as pool:
        with model.compute_lock:  # no batch can run: every admitted chat stays in the queue
            stream = httpx.stream(
                "POST",
                f"{url}/v1/chat/completions",
                json={"model": kb, "messages": [QUESTION], "max_tokens": 4, "stream": True},
                headers={"Authorization": f"Bearer {key}"},
                timeout=300,
            )
            response = stream.__enter__()
            lines = response.iter_lines()
            assert response.status_code == 200 and next(line for line in lines if line.startswith("data:"))
            # the stream holds one place (its first event, the sources, comes before the model): 5 more chats
            # find one place left
            futures = [pool.submit(ask, url, key, kb) for _ in range(5)]
            refused = wait_for(futures, 4)
            for answer in refused:
                assert_refused(answer, "KADAPT_MAX_CHAT_QUEUE")
            assert sum(not future.done() for future in futures) == 1
        streamed = [line for line in lines if line.startswith("data:")]
        stream.__exit__(None, None, None)
        assert streamed[-1] == "data: [DONE]"
        answers = [future.result() for future in futures]
        admitted = [answer for answer in answers if answer.status_code != 429]
        assert len(admitted) == 1 and admitted[0].status_code == 200
        assert admitted[0].json()["choices"][0]["message"]["content"] is not None
        assert all(answer.status_code < 500 for answer in answers)
        assert app.state.chat_queue.held == 0  # every place is given back, streamed or not
        assert ask(url, key, kb).status_code == 200


def test_one_key_past_its_own_bound_gets_429_while_others_are_served(env, kb):
    app = env.app(max_chat_queue=10, max_chat_per_key=1)
    model = app.state.pool.get("smollm2-135m")
    with serve(app) as url, ThreadPoolExecutor(4) as pool:
        with model.compute_lock:
            first = pool.submit(ask, url, env.keys["reader_member"], kb)
            while app.state.chat_queue.held < 1:  # admitted (then held by the lock)
                time.sleep(0.01)
            assert_refused(ask(url, env.keys["reader_member"], kb), "KADAPT_MAX_CHAT_PER_KEY")
            other = pool.submit(ask, url, env.keys["admin"], kb)  # another key has its own place
            while app.state.chat_queue.held < 2:
                time.sleep(0.01)
        assert first.result().status_code == 200 and other.result().status_code == 200
        assert app.state.chat_queue.held == 0
