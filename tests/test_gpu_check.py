"""bench/gpu_check.sh --platform cpu: the GPU readiness script's dry run on the CPU passes and
prints a step table: the 6 x 6 ViT in both dtypes, the 10 x 10 ViT and the 27-site Psiformer in
float32 (compiled with the unoptimized back end of the launched processes,
test_mpi.launch_xla_flags: the dry run checks the script, not the CPU's timings)."""

import os
import subprocess
from pathlib import Path

import pytest

from test_mpi import launch_xla_flags

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not (REPO / ".venv" / "bin" / "python").exists(), reason="needs the .ci/install venv")
def test_gpu_check_dry_run_on_cpu() -> None:
    env = dict(os.environ, XLA_FLAGS=launch_xla_flags())
    result = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), "--platform", "cpu"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    rows = [line.split("|") for line in result.stdout.splitlines() if line.startswith("| ")]
    timed = [(r[1].strip(), r[2].strip()) for r in rows if r[1].strip().endswith(".toml")]
    assert sorted(timed) == sorted([
        ("vit_6x6_factored.toml", "float64"), ("vit_6x6_factored.toml", "float32"),
        ("vit_10x10_published.toml", "float32"), ("psiformer_27sites_eps10.toml", "float32")])
    assert "gpu_check: passed on cpu" in result.stdout
