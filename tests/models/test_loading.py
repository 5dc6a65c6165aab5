"""The packaged default model is converted once per models dir, with one line instead of progress bars."""

from __future__ import annotations

import subprocess
import sys

import pytest

CONVERT = (
    "from pathlib import Path; from kadapt.settings import Settings; "
    "from kadapt_transformers import TransformersBackend; "
    "print(TransformersBackend().local_path('smollm2-135m', Settings(models_dir=Path(r'{folder}'))))"
)


@pytest.mark.slow
def test_the_gguf_conversion_happens_once_per_models_dir_and_says_so_in_one_line(tmp_path):
    def convert():
        code = CONVERT.format(folder=tmp_path)
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)

    first = convert()
    assert first.stdout.strip() == str(tmp_path / "smollm2-135m-instruct")
    assert (tmp_path / "smollm2-135m-instruct" / "model.safetensors").is_file()
    said = [line for line in first.stderr.splitlines() if line.strip()]
    assert said == [
        f"kadapt: converting the packaged SmolLM2 model to safetensors under {tmp_path / 'smollm2-135m-instruct'} "
        "(once per models dir)"
    ], first.stderr  # no "Converting and de-quantizing GGUF tensors..." or "Writing model shards" bars
    again = convert()
    assert again.stdout == first.stdout and not again.stderr.strip(), again.stderr  # converted once
