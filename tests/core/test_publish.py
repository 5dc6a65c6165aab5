"""Published folders (trained adapters, LoRA-server exports) reach the disk before the rename that makes them
visible: every file and the folder itself are fsynced first, the parent after. The thing under test is the
order of real calls, so os.fsync and os.replace are wrapped (and still called), not replaced."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import MODELS_DIR


@pytest.fixture
def disk_calls(monkeypatch) -> list[tuple[str, str]]:
    """("fsync", path) and ("replace", source) in the order they happen, from real calls."""
    calls: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(descriptor):
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{descriptor}")))
        return real_fsync(descriptor)

    def replace(source, target, *args, **kwargs):
        calls.append(("replace", str(Path(source).resolve())))
        return real_replace(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return calls


def _synced_before_publishing(calls: list[tuple[str, str]], staging: Path, final: Path, names: list[str]) -> None:
    staging = staging.resolve()
    (publish,) = [index for index, (kind, path) in enumerate(calls) if kind == "replace" and path == str(staging)]
    before = {path for kind, path in calls[:publish] if kind == "fsync"}
    missing = [name for name in names if str(staging / name) not in before]
    assert not missing, f"not fsynced before the rename: {missing}"
    assert str(staging) in before, "the folder itself was not fsynced before the rename"
    after = {path for kind, path in calls[publish:] if kind == "fsync"}
    assert str(final.parent.resolve()) in after, "the parent was not fsynced after the rename"


def test_publish_folder_syncs_every_file_and_folder_before_the_rename(tmp_path, disk_calls):
    from kadapt.paths import publish_folder

    staging, final = tmp_path / ".staging-adapter", tmp_path / "adapter"
    (staging / "nested").mkdir(parents=True)
    (staging / "adapter_config.json").write_text("{}")
    (staging / "nested" / "weights.bin").write_bytes(b"\0" * 1024)
    publish_folder(staging, final)
    assert (final / "nested" / "weights.bin").stat().st_size == 1024 and not staging.exists()
    _synced_before_publishing(disk_calls, staging, final, ["adapter_config.json", "nested/weights.bin", "nested"])


def test_a_trained_adapter_is_on_disk_before_it_is_published(tmp_path, monkeypatch, disk_calls):
    from kadapt.models import get_model_pool
    from kadapt.training import TrainConfig, train_lora
    from tests.conftest import clear_caches

    monkeypatch.setenv("KADAPT_MODELS_DIR", str(MODELS_DIR))
    clear_caches()
    get_model_pool().get("smollm2-135m")  # converts the packaged model when needed
    output = tmp_path / "adapters" / "ft-1"
    train_lora(
        str(MODELS_DIR / "smollm2-135m-instruct"),
        ["Glon are more dangerous than femp.", "All troff are glon."],
        output,
        TrainConfig(rank=2, alpha=4, max_steps=1, epochs=1, rows_per_step=1, row_tokens=32, checkpoint_every=100),
        work_dir=tmp_path / "work",
    )
    published = sorted(path.relative_to(output).as_posix() for path in output.rglob("*") if path.is_file())
    assert "adapter_config.json" in published and any(name.startswith("adapter_model") for name in published)
    _synced_before_publishing(disk_calls, output.with_name(f".staging-{output.name}"), output, published)


def test_a_lora_server_export_is_on_disk_before_it_is_published(tmp_path, disk_calls):
    from kadapt.lora_server import CONFIG_FILE, WEIGHTS_FILE, write_adapter

    weights = tmp_path / "weights.safetensors"
    weights.write_bytes(b"\1" * 4096)
    (tmp_path / "exports").mkdir()
    assert write_adapter(tmp_path / "exports", "kb-7", {"r": 2}, weights)
    (staging,) = {path for kind, path in disk_calls if kind == "replace" and ".staging-kb-7" in path}
    _synced_before_publishing(disk_calls, Path(staging), tmp_path / "exports" / "kb-7", [CONFIG_FILE, WEIGHTS_FILE])


def test_replacing_a_published_folder_leaves_the_old_or_the_whole_new_one(tmp_path, disk_calls, monkeypatch):
    from kadapt.paths import publish_folder

    final = tmp_path / "adapter"
    final.mkdir()
    (final / "weights.bin").write_text("old")
    staging = tmp_path / ".staging-1"
    staging.mkdir()
    (staging / "weights.bin").write_text("new")
    publish_folder(staging, final, replace=True)
    assert (final / "weights.bin").read_text() == "new" and not staging.exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["adapter"]  # the old one is gone
    _synced_before_publishing(disk_calls, staging, final, ["weights.bin"])

    # a rename that fails puts the old folder back where it was
    again = tmp_path / ".staging-2"
    again.mkdir()
    (again / "weights.bin").write_text("newer")
    real_replace = os.replace

    def failing(source, target, *args, **kwargs):
        if Path(source) == again:
            raise OSError("disk full")
        return real_replace(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(OSError, match="disk full"):
        publish_folder(again, final, replace=True)
    assert (final / "weights.bin").read_text() == "new"
