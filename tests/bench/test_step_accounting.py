"""devtools/step_accounting.py with the real ComfyUI in-process: each step's counts are its own,
and the counted functions are given back afterwards."""
import gc
import time

import pytest
import torch

from devtools.comfy_host import import_comfy_in_process
from devtools.step_accounting import step_accounting


def test_each_step_counts_its_own_calls_and_collections():
    import_comfy_in_process()
    import comfy.float
    original = comfy.float.stochastic_rounding
    calls_per_step = (3, 0, 1)
    with step_accounting() as (steps, on_step):
        for calls in calls_per_step:
            for seed in range(calls):
                comfy.float.stochastic_rounding(torch.randn(4, 4), torch.float8_e4m3fn, seed=seed)
            if calls == 1:
                gc.collect()
            on_step()
    assert comfy.float.stochastic_rounding is original
    # DynamicVRAM's reloads and restored backups are counted where it exists (0.33), and only there
    import comfy.model_patcher
    dynamic = hasattr(comfy.model_patcher, "ModelPatcherDynamic")
    assert all(("dynamic_loads" in step) == ("backups_restored" in step) == dynamic for step in steps)
    assert [step["stochastic_rounding"] for step in steps] == list(calls_per_step)
    assert steps[2]["gc"] >= 1
    assert all(step["wall_s"] >= 0 and step["cpu_s"] >= 0 and step["reserved_gib"] >= step["allocated_gib"] >= 0
               for step in steps)
    assert all(step["host_probe_s"] > 0 for step in steps)


def test_issue_time_ends_where_the_host_had_queued_the_step():
    with step_accounting() as (steps, on_step):
        time.sleep(0.05)
        issued_at = time.perf_counter()
        time.sleep(0.05)
        on_step(issued_at)
        on_step()
    queued_then_waited, no_wait = steps
    assert 0.05 <= queued_then_waited["issue_s"] <= queued_then_waited["wall_s"] - 0.05
    assert no_wait["issue_s"] == no_wait["wall_s"]
    # the second step's time begins after the first one's probe (five runs of it), not before
    assert no_wait["wall_s"] < queued_then_waited["host_probe_s"]
    assert queued_then_waited["device_allocations"] == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="kernel launches need a CUDA device")
def test_a_step_on_a_gpu_times_the_kernel_launches_of_its_probe():
    with step_accounting() as (steps, on_step):
        on_step()
    assert 0 < steps[0]["launch_probe_s"] < 1
