"""The CUDA code paths (generation, batched scoring, LoRA training) agree with the CPU's: bench/cuda_check.py,
run where a CUDA device is."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import MODELS_DIR, REPO


@pytest.mark.gpu
@pytest.mark.slow
def test_generation_scoring_and_training_on_cuda_agree_with_the_cpu(tmp_path, kadapt_env):
    from kadapt.models import local_model_path
    from kadapt.settings import get_settings

    files = local_model_path("smollm2-135m", get_settings())  # the tokenizer and config of the packaged model
    assert MODELS_DIR.exists()
    report = tmp_path / "cuda.json"
    command = [sys.executable, str(REPO / "bench" / "cuda_check.py"), "--model-files", files, "--json", str(report)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert json.loads(report.read_text())
