"""bench/lora_matrix.py's step-by-step profile on the CPU (the matrix itself needs a GPU): each
sampling step is a profiling cycle of its own, so a slow stretch of steps shows step by step."""
import torch

from bench.lora_matrix import profiled_per_step


def test_each_step_is_summarized_on_its_own():
    sizes = (8, 256, 8)

    def run(on_step):
        for size in sizes:
            for _ in range(size):
                torch.ones(size, size).add_(1)
            on_step()
        return "sampled"

    result, steps = profiled_per_step(run)
    assert result == "sampled"
    assert len(steps) == len(sizes)  # and no cycle for what ran after the last step
    for step in steps:
        assert set(step) == {"gpu_ms", "htod_copies", "htod_ms", "top"}
        assert step["gpu_ms"] >= 0 and step["htod_copies"] >= 0
