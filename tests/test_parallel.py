"""Launcher detection and one-GPU-per-rank binding (environment only: no GPU needed)."""

import pytest

from hpcvmc import parallel

LAUNCHER_VARS = [v for triple in parallel._LAUNCHER_VARIABLES for v in triple] + [
    "SLURM_STEP_ID", "CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "JAX_PLATFORMS"]


@pytest.fixture
def clean_env(monkeypatch):
    """No launcher or device variables; whatever the test sets is undone afterwards."""
    for var in LAUNCHER_VARS:
        monkeypatch.setenv(var, "")  # recorded, so that teardown restores the original
        monkeypatch.delenv(var)
    return monkeypatch


def test_serial_without_launcher_needs_no_mpi(clean_env):
    assert parallel.launcher_world_size() == 1
    comm = parallel.init_distributed()
    assert comm is parallel.SERIAL and comm.mpi_comm is None
    assert comm.sum(1.5) == 1.5 and comm.gather_rows([[1, 2]]).tolist() == [[1, 2]]


def test_launcher_variables(clean_env):
    clean_env.setenv("PMI_SIZE", "4")
    clean_env.setenv("MPI_LOCALRANKID", "3")
    assert parallel.launcher_world_size() == 4 and parallel.launcher_local_rank() == 3
    clean_env.delenv("PMI_SIZE")
    clean_env.setenv("SLURM_NTASKS", "8")
    assert parallel.launcher_world_size() == 1  # the batch script itself is one process
    clean_env.setenv("SLURM_STEP_ID", "0")
    assert parallel.launcher_world_size() == 8


def test_bind_device_rules(clean_env):
    clean_env.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    parallel.bind_device(local_rank=5)
    assert parallel.os.environ["CUDA_VISIBLE_DEVICES"] == "5"  # entry 5 mod 4 = 1
    clean_env.setenv("CUDA_VISIBLE_DEVICES", "2")  # Slurm gave this task one GPU: keep it
    parallel.bind_device(local_rank=1)
    assert parallel.os.environ["CUDA_VISIBLE_DEVICES"] == "2"
    clean_env.delenv("CUDA_VISIBLE_DEVICES")
    clean_env.setenv("OMPI_COMM_WORLD_SIZE", "2")
    parallel.bind_device(local_rank=1)
    assert parallel.os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    parallel.bind_device(local_rank=0, platform="cpu")
    assert parallel.os.environ["JAX_PLATFORMS"] == "cpu"
