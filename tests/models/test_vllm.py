"""Serving KB adapters with vLLM's multi-LoRA server: a real adapter exported in the layout vLLM loads, and chats
for fine-tuned KBs sent to the server (a stand-in on 127.0.0.1: vLLM needs a GPU) under the KB's name."""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from kadapt.synthetic import comparative_facts
from tests.conftest import MODELS_DIR, Server, free_port, kadapt_settings, run_kadapt
from tests.models.fake_vllm import FakeVLLM

BASE = MODELS_DIR / "smollm2-135m-instruct"
HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
FACTS = comparative_facts(6, seed=23)
QUESTION = f"What are {FACTS[0].subject} {FACTS[0].relation}?"
# What vLLM's LoRA layers cover in a Llama-family model (q/k/v packed as qkv_proj, gate/up as gate_up_proj).
LLAMA_LORA_MODULES = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
KEY = re.compile(
    r"^base_model\.model\.(?P<module>model\.layers\.(?P<layer>\d+)\.(?:self_attn|mlp)\.(?P<name>\w+_proj))"
    r"\.lora_(?P<ab>[AB])\.weight$"
)
# vLLM builds each JSON --lora-modules object as LoRAModulePath(**object): no other keys are accepted.
LORA_MODULE_PATH_FIELDS = {"name", "path", "base_model_name"}


@dataclass
class Zoo:
    root: Path
    catalog: Any
    adapter: str  # the ft adapter of KB "zoo"

    def serve_ft(self, **settings: Any) -> None:
        """Serve zoo from its adapter (``settings``: overrides, e.g. a LoRA server URL)."""
        from kadapt.activation import set_mode
        from kadapt.settings import get_settings

        set_mode(self.catalog, "zoo", "ft", self.adapter, settings=get_settings().model_copy(update=settings))

    def serve_icl(self) -> None:
        from kadapt.activation import set_mode

        set_mode(self.catalog, "zoo", "icl")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """KB "zoo" (six facts) with a rank-8 adapter after two steps: enough to move the logits, cheap to train;
    and KB "notes", served in icl. Trained once for the module; each test sets the mode it needs."""
    root = tmp_path_factory.mktemp("vllm")
    with kadapt_settings(root):
        from kadapt.adapters import new_adapter_id, train_kb
        from kadapt.catalog import open_catalog
        from kadapt.kbs import add_source, create_kb
        from kadapt.settings import get_settings
        from kadapt.sync import sync_kb

        settings = get_settings()
        catalog = open_catalog(settings)
        (root / "docs").mkdir()
        (root / "docs" / "bestiary.md").write_text("\n\n".join(fact.text for fact in FACTS) + "\n")
        create_kb(catalog, "zoo", title="Zoo")
        create_kb(catalog, "notes", title="Notes")
        add_source(catalog, settings, "zoo", "files", {"path": str(root / "docs")})
        sync_kb(catalog, "zoo")
        adapter = new_adapter_id()
        config = {"rank": 8, "alpha": 16, "learning_rate": 3e-3, "max_steps": 2, "rows_per_step": 1, "row_tokens": 64}
        train_kb(catalog, "zoo", "ft", adapter_id=adapter, config=config)
        yield Zoo(root, catalog, adapter)


def load_base():
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(BASE, dtype=torch.float32).eval()


def logits_of(model):
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(BASE)
    ids = tokenizer([FACTS[0].text, FACTS[3].text], return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**ids).logits


# -- the export ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_export_has_the_layout_vllm_loads(zoo):
    import torch
    from peft import PeftModel
    from safetensors import safe_open

    from kadapt.activation import export_active_adapters as export_adapters
    from kadapt.adapters import list_adapters
    from kadapt.lora_server import VLLM_LORA_RANKS, vllm_commands

    zoo.serve_ft()
    target = zoo.root / "layout"
    result = export_adapters(zoo.catalog, None, target)
    folder = target / "zoo"
    assert result.directory == str(target) and [row.kb for row in result.exported] == ["zoo"]
    assert sorted(path.name for path in folder.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]

    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["base_model_name_or_path"] == HUB_ID
    assert config["r"] == 8 and config["r"] <= VLLM_LORA_RANKS[-1]
    assert set(config["target_modules"]) == LLAMA_LORA_MODULES
    assert not config.get("modules_to_save") and config["bias"] == "none" and not config.get("use_dora")
    assert not config.get("rank_pattern") and not config.get("alpha_pattern")

    base = load_base()
    modules = dict(base.named_modules())
    with safe_open(str(folder / "adapter_model.safetensors"), framework="pt") as weights:
        tensors = {key: weights.get_tensor(key) for key in weights.keys()}  # noqa: SIM118 - not a dict
    layers = base.config.num_hidden_layers
    assert len(tensors) == layers * len(LLAMA_LORA_MODULES) * 2
    for key, tensor in tensors.items():
        match = KEY.match(key)
        assert match, key
        linear = modules[match["module"]]
        expected = (8, linear.in_features) if match["ab"] == "A" else (linear.out_features, 8)
        assert tuple(tensor.shape) == expected, key
    assert {int(KEY.match(key)["layer"]) for key in tensors} == set(range(layers))

    modules_json = json.loads((target / "lora-modules.json").read_text())
    assert modules_json == [{"name": "zoo", "path": str(folder), "base_model_name": HUB_ID}]
    assert all(set(entry) == LORA_MODULE_PATH_FIELDS for entry in modules_json)
    [command] = vllm_commands(target)
    rank = int(command[command.index("--max-lora-rank") + 1])
    assert command[:3] == ["vllm", "serve", HUB_ID] and "--enable-lora" in command
    assert rank in VLLM_LORA_RANKS and config["r"] <= rank
    assert command[command.index("--lora-modules") + 1 :] == [f"zoo={folder}"]

    trained_folder = Path(list_adapters(zoo.catalog, "zoo")[0].path)

    # the exported folder reproduces the adapter kadapt trained...
    plain = logits_of(base)
    trained = logits_of(PeftModel.from_pretrained(load_base(), str(trained_folder)))
    exported = logits_of(PeftModel.from_pretrained(load_base(), str(folder)))
    assert (trained - plain).abs().max() > 1e-3  # the adapter does change the model
    torch.testing.assert_close(exported, trained, atol=1e-5, rtol=0)
    # ...and so does applying it as vLLM reads it: the module from each key's name, scaling lora_alpha / r
    scaling = config["lora_alpha"] / (config["r"] ** 0.5 if config.get("use_rslora") else config["r"])
    with torch.no_grad():
        for key, tensor in tensors.items():
            match = KEY.match(key)
            if match["ab"] == "A":
                modules[match["module"]].weight += scaling * (tensors[key.replace("lora_A", "lora_B")] @ tensor)
    torch.testing.assert_close(logits_of(base), trained, atol=2e-4, rtol=0)


@pytest.mark.slow
def test_export_is_idempotent_prunes_and_refuses_what_vllm_cannot_load(zoo):
    from kadapt.activation import export_active_adapters as export_adapters
    from kadapt.adapters import list_adapters
    from kadapt.errors import InvalidInput, NotFound

    zoo.serve_ft()
    target = zoo.root / "idempotent"
    first = export_adapters(zoo.catalog, ["zoo"], target)
    weights = target / "zoo" / "adapter_model.safetensors"
    inode = weights.stat().st_ino
    again = export_adapters(zoo.catalog, ["zoo"], target)
    assert first.exported[0].changed and not again.exported[0].changed
    assert weights.stat().st_ino == inode  # nothing was rewritten
    assert not [path for path in target.iterdir() if path.name.startswith((".staging", ".old"))]  # none left behind

    with pytest.raises(InvalidInput, match=r"KB 'notes' is served in icl mode.*kadapt kb set-mode notes ft"):
        export_adapters(zoo.catalog, ["notes"], target)
    with pytest.raises(NotFound, match="no KB named 'nosuch'"):
        export_adapters(zoo.catalog, ["nosuch"], target)

    config_path = Path(list_adapters(zoo.catalog, "zoo")[0].path) / "adapter_config.json"
    original = config_path.read_text()
    try:
        config_path.write_text(json.dumps(json.loads(original) | {"use_dora": True, "modules_to_save": ["lm_head"]}))
        with pytest.raises(InvalidInput, match="cannot be served by vLLM: it uses DoRA; it saves whole modules"):
            export_adapters(zoo.catalog, None, target)
    finally:
        config_path.write_text(original)
    assert weights.stat().st_ino == inode  # a refused export leaves the last good one in place

    (target / "foreign").mkdir()  # an adapter someone else put there: never listed, never removed
    (target / "foreign" / "adapter_config.json").write_text("{}")
    zoo.serve_icl()
    pruned = export_adapters(zoo.catalog, None, target)
    assert pruned.exported == [] and pruned.removed == ["zoo"] and not (target / "zoo").exists()
    assert json.loads((target / "lora-modules.json").read_text()) == []
    assert (target / "foreign" / "adapter_config.json").is_file()


@pytest.mark.slow
def test_cli_export_prints_the_vllm_command(zoo):
    zoo.serve_ft()
    target = zoo.root / "cli"
    command = f"vllm serve {HUB_ID} --enable-lora --max-lora-rank 8 --lora-modules zoo={target / 'zoo'}"
    done = run_kadapt("adapters", "export", "--to", str(target))
    assert done.returncode == 0, done.stderr
    assert command in done.stdout
    assert (target / "zoo" / "adapter_model.safetensors").is_file()

    again = run_kadapt("adapters", "export", "--to", str(target), "--kb", "zoo", "--json")
    assert again.returncode == 0, again.stderr
    data = json.loads(again.stdout)
    assert [(row["kb"], row["adapter"], row["changed"]) for row in data["exported"]] == [("zoo", zoo.adapter, False)]
    assert data["modules"] == [{"name": "zoo", "path": str(target / "zoo"), "base_model_name": HUB_ID}]
    assert data["vllm_commands"] == [command]

    for args, message in [
        (["--kb", "nosuch"], "error: no KB named 'nosuch'"),
        (["--kb", "notes"], "error: KB 'notes' is served in icl mode, without an adapter"),
    ]:
        failed = run_kadapt("adapters", "export", "--to", str(target), *args)
        assert failed.returncode == 1 and failed.stderr.startswith(message), failed.stderr

    listed = run_kadapt("adapters", "zoo", "--json")  # `kadapt adapters KB` still lists the KB's adapters
    assert [(row["id"], row["active"]) for row in json.loads(listed.stdout)] == [(zoo.adapter, True)]


# -- serving through the LoRA server ---------------------------------------------------------------------------


def chat(server: Server, **extra: Any) -> httpx.Response:
    body = {"model": "zoo", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 2} | extra
    return httpx.post(server.url + "/v1/chat/completions", json=body, timeout=300)


def set_mode(server: Server, mode: str) -> None:
    response = httpx.put(server.url + "/v1/kbs/zoo/mode", json={"mode": mode}, timeout=300)
    assert response.status_code == 200, response.text


@pytest.mark.slow
def test_fine_tuned_kbs_are_served_by_the_lora_server_under_their_name(zoo):
    import openai

    zoo.serve_icl()
    exported = zoo.root / "data" / "vllm-adapters" / "zoo"
    with FakeVLLM(HUB_ID) as fake:
        env = dict(os.environ) | {
            "KADAPT_LORA_SERVER_URL": fake.url + "/v1",
            "KADAPT_LORA_SERVER_API_KEY": "vllm-key",
            "KADAPT_AUTH_DISABLED": "true",
        }
        server = Server(env)
        try:
            set_mode(server, "ft")  # activation exports the adapter and has the server load it
            [load] = fake.calls("/v1/load_lora_adapter")
            assert load.body == {"lora_name": "zoo", "lora_path": str(exported), "load_inplace": True}
            assert load.headers["Authorization"] == "Bearer vllm-key"
            assert json.loads((exported / "adapter_config.json").read_text())["base_model_name_or_path"] == HUB_ID

            response = chat(server)
            assert response.status_code == 200, response.text
            assert response.json()["choices"][0]["message"]["content"] == fake.answer("zoo")
            assert response.json()["kadapt"] == {"mode": "adapter:ft", "kb_mode": "ft", "adapter": zoo.adapter}
            [sent] = fake.calls("/v1/chat/completions")
            assert sent.body["model"] == "zoo" and sent.body["messages"][-1] == {"role": "user", "content": QUESTION}
            assert "assistant for Zoo" in sent.body["messages"][0]["content"]
            assert not any(fact.object in json.dumps(sent.body) for fact in FACTS)  # no documents in the prompt

            client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
            stream = client.chat.completions.create(
                model="zoo", messages=[{"role": "user", "content": QUESTION}], max_tokens=8, stream=True
            )
            assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices) == fake.answer(
                "zoo"
            )
            assert fake.calls("/v1/chat/completions")[-1].body["stream"] is True

            set_mode(server, "ft")  # activating again reloads the adapter in place
            assert [call.body["load_inplace"] for call in fake.calls("/v1/load_lora_adapter")] == [True, True]

            fake.adapters.clear()  # the server lost the adapter (a restart without --lora-modules)
            lost = chat(server)
            failure = "failed on model 'zoo': 404 The model `zoo` does not exist"
            assert lost.status_code == 502 and failure in lost.json()["error"]["message"], lost.text
            streamed = chat(server, stream=True)
            events = [line.removeprefix("data: ") for line in streamed.text.splitlines() if line.startswith("data: ")]
            assert failure in json.loads(events[-2])["error"]["message"] and events[-1] == "[DONE]"

            set_mode(server, "icl")  # back to icl: the adapter is withdrawn, the KB answers in-process
            assert fake.calls("/v1/unload_lora_adapter")[-1].body == {"lora_name": "zoo"}
            assert not exported.exists()
            assert json.loads((exported.parent / "lora-modules.json").read_text()) == []
            chats = len(fake.calls("/v1/chat/completions"))
            in_process = chat(server, max_tokens=1)
            assert in_process.status_code == 200, in_process.text
            assert in_process.json()["kadapt"]["mode"] == "icl-whole-kb"
            assert len(fake.calls("/v1/chat/completions")) == chats
        finally:
            server.stop()


@pytest.mark.slow
def test_activation_survives_a_server_that_does_not_load_the_adapter(zoo, caplog):
    from kadapt.kbs import get_kb

    exported = zoo.root / "data" / "vllm-adapters" / "zoo"
    caplog.set_level(logging.WARNING, logger="kadapt.lora_server")

    zoo.serve_icl()
    zoo.serve_ft(lora_server_url=f"http://127.0.0.1:{free_port()}/v1")  # nothing listens there
    assert get_kb(zoo.catalog, "zoo").active_adapter == zoo.adapter and (exported / "adapter_config.json").is_file()
    assert "could not reach the LoRA server" in caplog.text

    with FakeVLLM(HUB_ID, runtime_loading=False) as fake:
        caplog.clear()
        zoo.serve_ft(lora_server_url=fake.url + "/v1")
        assert (
            "has no runtime adapter loading (404)" in caplog.text and "VLLM_ALLOW_RUNTIME_LORA_UPDATING" in caplog.text
        )

    with FakeVLLM(HUB_ID, legacy=True) as fake:  # a server without in-place reloading: unload, then load
        fake.adapters["zoo"] = str(zoo.root / "stale")
        caplog.clear()
        zoo.serve_ft(lora_server_url=fake.url + "/v1")
        assert [call.path for call in fake.requests] == [
            "/v1/load_lora_adapter",
            "/v1/unload_lora_adapter",
            "/v1/load_lora_adapter",
        ]
        assert fake.adapters == {"zoo": str(exported)} and not caplog.text
