"""How many units the Ray executor keeps in flight, and the thread count each of its workers gives torch (no Ray
needed: tests/e2e/test_ray_executor.py runs the real thing)."""

from __future__ import annotations

import os

import pytest

from runners.config import load_config
from runners.platform import resolve_profile
from runners.ray_executor import RaySettings, UnitWorker


def test_slots_follow_the_cluster_resources_unless_the_config_names_a_number() -> None:
    eight_gpus = {"CPU": 32.0, "GPU": 8.0}
    assert RaySettings(cpus_per_unit=1, gpus_per_unit=1).slots(eight_gpus) == 8
    assert RaySettings(cpus_per_unit=1, gpus_per_unit=0.5).slots(eight_gpus) == 16  # two small models per GPU
    assert RaySettings(cpus_per_unit=4, gpus_per_unit=0.25).slots(eight_gpus) == 8  # CPUs run out first
    assert RaySettings(cpus_per_unit=1, gpus_per_unit=0).slots({"CPU": 2.0}) == 2
    assert RaySettings(cpus_per_unit=1, gpus_per_unit=1).slots({"CPU": 2.0}) == 1  # no GPU: one slot, it waits
    assert RaySettings(cpus_per_unit=1, gpus_per_unit=1, workers=3).slots(eight_gpus) == 3


def test_gpu_profiles_ask_one_gpu_per_unit_and_the_cpu_profile_none() -> None:
    assert RaySettings.from_config(load_config("selftest", resolve_profile("a100-80"), ())).gpus_per_unit == 1
    assert RaySettings.from_config(load_config("selftest", resolve_profile("cpu"), ())).gpus_per_unit == 0


def test_a_worker_gives_torch_the_threads_of_its_cpus(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    torch = pytest.importorskip("torch")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    before = torch.get_num_threads()
    cfg = load_config("selftest", resolve_profile("cpu"), ("selftest.units=1", "selftest.iterations=1"))
    worker = UnitWorker(cfg, str(tmp_path), {"num_cpus": 2})
    try:
        record = worker.process("hash", "u00000", None, 0)
        assert record["status"] == "ok" and torch.get_num_threads() == 2
        assert os.environ["OMP_NUM_THREADS"] == "2"  # for a torch imported later in that worker
    finally:
        worker.close()
        torch.set_num_threads(before)
