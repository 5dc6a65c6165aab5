"""A training process killed with SIGKILL resumes from its checkpoint; the active adapter serves throughout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from kadapt.synthetic import comparative_facts
from tests.conftest import Server, run_kadapt

FACTS = comparative_facts(12, seed=5)


def chat(server: Server) -> dict:
    response = httpx.post(
        server.url + "/v1/chat/completions",
        timeout=300,
        json={
            "model": "zoo",
            "messages": [{"role": "user", "content": f"Tell me about {FACTS[0].subject}."}],
            "max_tokens": 4,
        },
    )
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.slow
def test_sigkill_mid_training_resumes_and_the_active_adapter_keeps_serving(kadapt_env):
    # which adapter answers is the point here: a 2-epoch adapter may not recognise the question (kadapt.routing)
    env = dict(os.environ) | {"KADAPT_JOB_STALE_SECONDS": "2", "KADAPT_ADAPTER_ROUTING": "false"}
    docs = kadapt_env / "docs"
    docs.mkdir()
    (docs / "bestiary.md").write_text("\n\n".join(fact.text for fact in FACTS) + "\n")
    for args in (["kb", "create", "zoo"], ["source", "add", "zoo", "files", "--path", str(docs)], ["sync", "zoo"]):
        assert run_kadapt(*args, env=env).returncode == 0
    first = run_kadapt("train", "zoo", "--mode", "ft", "--epochs", "2", "--rank", "4", "--activate", "--json", env=env)
    assert first.returncode == 0, first.stderr
    adapter_a = json.loads(first.stdout)["adapter"]

    server = Server(env | {"KADAPT_AUTH_DISABLED": "true"})
    try:
        assert chat(server)["kadapt"]["adapter"] == adapter_a
        command = [
            sys.executable,
            "-m",
            "kadapt.cli",
            "train",
            "zoo",
            "--mode",
            "ft",
            "--epochs",
            "6",
            "--row-tokens",
            "32",
            "--rows-per-step",
            "1",
            "--checkpoint-every",
            "3",
            "--json",
        ]
        training = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        [adapters_root] = (kadapt_env / "data" / "adapters").glob("kb-*")  # named by the KB's id
        deadline = time.monotonic() + 240
        state = None
        while time.monotonic() < deadline and training.poll() is None:
            states = list(adapters_root.glob(".work-*/checkpoint/state.json"))
            if states and json.loads(states[0].read_text())["step"] >= 3:
                state = states[0]
                break
            time.sleep(0.2)
        assert state is not None, "no checkpoint was written before the deadline"
        assert chat(server)["kadapt"]["adapter"] == adapter_a  # serving during training
        training.send_signal(signal.SIGKILL)
        training.wait()
        new_id = state.parent.parent.name.removeprefix(".work-")
        assert not (adapters_root / new_id).exists()  # nothing half-written was published
        assert chat(server)["kadapt"]["adapter"] == adapter_a  # and after the crash

        time.sleep(2.5)  # the killed job's heartbeat goes stale
        resumed = run_kadapt("train", "zoo", "--mode", "ft", "--json", env=env)
        assert resumed.returncode == 0, resumed.stderr
        result = json.loads(resumed.stdout)
        assert result["adapter"] == new_id and result["resumed_from_step"] >= 3
        assert result["steps"] > result["resumed_from_step"]
        assert (adapters_root / new_id / "adapter_config.json").exists()
        assert chat(server)["kadapt"]["adapter"] == adapter_a  # not activated: A still serves

        listed = json.loads(run_kadapt("adapters", "zoo", "--json", env=env).stdout)
        assert {row["id"]: row["active"] for row in listed} == {adapter_a: True, new_id: False}
        switched = httpx.put(server.url + "/v1/kbs/zoo/mode", json={"mode": "ft", "adapter": new_id})
        assert switched.status_code == 200, switched.text
        assert chat(server)["kadapt"]["adapter"] == new_id  # picked up without a restart
        jobs = json.loads(run_kadapt("jobs", "--json", env=env).stdout)
        train_jobs = [job for job in jobs if job["kind"] == "train"]
        assert sorted(job["state"] for job in train_jobs) == ["succeeded", "succeeded"]
        assert max(job["attempts"] for job in train_jobs) == 2
    finally:
        server.stop()
