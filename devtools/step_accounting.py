"""Per sampling step: wall time, the host's time to issue the step, the process's CPU time, Python
garbage collections and their time, how fast the host ran a fixed piece of Python (host_probe_s) and
launched a fixed number of tiny CUDA kernels (launch_probe_s), the memory torch's caching allocator holds
on the GPU and its device allocations, and how often chosen ComfyUI functions ran, without a profiler
(whose overhead hides a slow stretch of a few steps under DynamicVRAM). An issue time close to the wall
time says a step is bound by the host (the GPU waited for work), or that the host waited on the GPU
inside it; far below it, bound by the GPU. A host_probe_s that grows with the issue time says the CPU
itself ran slower; one that stays while the issue time grows, that the host had more to do in the step,
waited inside it (CUDA's synchronizations spin: CPU time too) or paid more a kernel launch
(launch_probe_s).

Synchronizations are not counted: torch's sync debug mode, which warns at each, took 5-19 s for the
first step after a LoRA state change without DynamicVRAM (1500-2900 warnings in that step),
which spent a whole GPU call's time limit on the lent machine (H200, 2026-12-01)."""
import gc
import importlib
import time
from contextlib import contextmanager

import torch

_GIB = 2 ** 30
_PROBE_ITERATIONS = 10_000
_PROBE_LAUNCHES = 200

# (module, attribute path, counter name): the functions whose calls are counted per step; a
# counter of a function returning a bool counts its False results (a VBAR weight not resident).
COUNTED = (("comfy_aimdo.model_vbar", "vbar_signature_compare", "vbar_not_resident"),
           ("comfy.lora", "calculate_weight", "lora_calculate_weight"),
           ("comfy.float", "stochastic_rounding", "stochastic_rounding"),
           ("comfy.model_patcher", "LowVramPatch.__call__", "lowvram_patch_calls"),
           ("sd35_fp8.nodes.comfy_versions", "ScaledLowVramPatch.__call__", "scaled_patch_calls"),
           # 0.33 DynamicVRAM: a (re)load of the model, and the parameters it forced onto the GPU besides
           # the staged weights (our weight scales among them) put back in host memory to free VRAM
           ("comfy.model_patcher", "ModelPatcherDynamic.load", "dynamic_loads"),
           ("comfy.model_patcher", "ModelPatcherDynamic.restore_loaded_backups", "backups_restored"))


def _resolve(module_name, path):
    try:
        owner = importlib.import_module(module_name)
    except ImportError:  # comfy_aimdo: ComfyUI 0.33 only
        return None, None
    *parents, name = path.split(".")
    for parent in parents:
        owner = getattr(owner, parent, None)  # ModelPatcherDynamic: 0.33 only
    return (owner, name) if owner is not None else (None, None)


@contextmanager
def step_accounting():
    """Yields (steps, on_step): call on_step(issued_at) after each step, issued_at: time.perf_counter()
    when the host had queued the step's work, before it waited for the GPU; steps gets one dict per
    step."""
    counts, steps, restore = {}, [], []
    for module_name, path, counter in COUNTED:
        owner, name = _resolve(module_name, path)
        if owner is None:
            continue
        original = getattr(owner, name)
        counts[counter] = 0

        def counted(*args, _original=original, _counter=counter, **kwargs):
            result = _original(*args, **kwargs)
            if result is not True:
                counts[_counter] += 1
            return result
        setattr(owner, name, counted)
        restore.append((owner, name, original))
    gc_state = {"collections": 0, "seconds": 0.0, "started": 0.0}

    def on_gc(phase, info):
        if phase == "start":
            gc_state["started"] = time.perf_counter()
        else:
            gc_state["collections"] += 1
            gc_state["seconds"] += time.perf_counter() - gc_state["started"]
    gc.callbacks.append(on_gc)
    cuda = torch.cuda.is_available()
    last = [time.perf_counter(), time.process_time(), _device_allocations(cuda)]

    def on_step(issued_at=None):
        wall, cpu, allocations = time.perf_counter(), time.process_time(), _device_allocations(cuda)
        steps.append({"wall_s": round(wall - last[0], 4),
                      "issue_s": round((wall if issued_at is None else issued_at) - last[0], 4),
                      "cpu_s": round(cpu - last[1], 4),
                      "gc": gc_state["collections"], "gc_s": round(gc_state["seconds"], 4),
                      # what it holds beyond the live tensors is VRAM DynamicVRAM cannot stage weights in
                      "reserved_gib": round(torch.cuda.memory_reserved() / _GIB, 3) if cuda else 0.0,
                      # the live tensors in it: the rest is cached, or pinned by a live tensor in its segment
                      "allocated_gib": round(torch.cuda.memory_allocated() / _GIB, 3) if cuda else 0.0,
                      "device_allocations": allocations - last[2],
                      "host_probe_s": host_probe(),
                      **({"launch_probe_s": launch_probe()} if cuda else {}),
                      **counts})
        # the probe's time is not the next step's
        last[:] = [time.perf_counter(), time.process_time(), allocations]
        gc_state.update(collections=0, seconds=0.0)
        for counter in counts:
            counts[counter] = 0
    try:
        yield steps, on_step
    finally:
        gc.callbacks.remove(on_gc)
        for owner, name, original in restore:
            setattr(owner, name, original)


def host_probe(repeats=5):
    """Seconds the host takes for a fixed piece of pure Python (under a millisecond), the fastest of
    `repeats`: how fast the CPU runs this process now, without the preemptions that a single timing
    would include."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        total = 0
        for value in range(_PROBE_ITERATIONS):
            total += value * value
        best = min(best, time.perf_counter() - started)
    return round(best, 6)


def launch_probe(launches=_PROBE_LAUNCHES):
    """Seconds the host takes to launch `launches` one-element CUDA kernels (a few microseconds each), on
    an idle GPU, waited for afterwards and not timed: what one kernel launch costs the host now (an eager
    SD3.5 step launches a few thousand)."""
    tiny = torch.zeros(1, device="cuda")
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(launches):
        tiny.add_(1)
    elapsed = time.perf_counter() - started
    torch.cuda.synchronize()
    return round(elapsed, 6)


def _device_allocations(cuda):
    """How many times torch's caching allocator has asked the driver for memory (cudaMalloc)."""
    return torch.cuda.memory_stats().get("num_device_alloc", 0) if cuda else 0
