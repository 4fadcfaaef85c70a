"""The asv benchmark suite imports and, in quick mode, runs the NumPy cells green."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ASV = Path(sys.executable).parent / "asv"


@pytest.mark.skipif(not ASV.exists() and not shutil.which("asv"), reason="asv is not installed (pip install 'fwbench[dev]')")
def test_asv_quick_dry_run_of_the_numpy_cells(tmp_path):
    asv = str(ASV if ASV.exists() else shutil.which("asv"))
    env = {**os.environ, "HOME": str(tmp_path), "FWBENCH_ASV_BACKENDS": "numpy"}
    subprocess.run([asv, "machine", "--yes"], cwd=ROOT, env=env, check=True, capture_output=True)
    result = subprocess.run([asv, "run", "--python=same", "--quick", "--dry-run", "--show-stderr"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=600, check=False)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    ran = [line for line in out.splitlines() if line.rstrip().endswith((" ok", " failed"))]
    assert len(ran) == 5 and all(line.rstrip().endswith(" ok") for line in ran), out[-3000:]
    assert "n/a" not in out and "failed" not in out
