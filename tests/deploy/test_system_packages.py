"""`make test` checks the Debian packages the suite needs before it runs a test (deploy/system-packages)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "system-packages"


def run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    (fake / "id").write_text("#!/bin/sh\necho 1000\n")  # not root: nothing may be installed, only named
    (fake / "id").chmod(0o755)
    environment = os.environ | {"PATH": f"{fake}:{os.environ['PATH']}"} | env
    return subprocess.run([str(SCRIPT)], env=environment, capture_output=True, text=True, timeout=30, check=False)


def test_a_missing_package_stops_before_the_tests_with_the_command_that_installs_it(tmp_path):
    result = run(tmp_path, KADAPT_TEST_CHROMIUM=str(tmp_path / "no-chromium"), KADAPT_SKIP_BROWSER="")
    assert result.returncode == 1
    assert "missing here: " in result.stderr and "chromium" in result.stderr.splitlines()[0]
    assert "sudo apt-get install -y" in result.stderr and "KADAPT_SKIP_BROWSER=1" in result.stderr


def test_skipping_the_browser_tests_needs_no_chromium(tmp_path):
    result = run(tmp_path, KADAPT_TEST_CHROMIUM=str(tmp_path / "no-chromium"), KADAPT_SKIP_BROWSER="1")
    # git and redis-server are on this machine (the suite uses them); chromium is not asked for
    assert "chromium" not in result.stderr
    assert result.returncode == (1 if result.stderr else 0), result.stderr
