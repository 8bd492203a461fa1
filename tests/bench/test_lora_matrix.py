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


def test_the_ab_switch_keeps_layers_with_a_lora_off_the_one_pass_blocks(monkeypatch):
    from types import SimpleNamespace
    from bench.lora_matrix import lora_leaves_one_pass_blocks
    from devtools.comfy_host import import_comfy_in_process
    import_comfy_in_process()
    from devtools.fp8_layer import fp8_linear
    from sd35_fp8.quant.kernels.compute_path import FP8_ROWWISE, ComputePath
    from sd35_fp8.quant.kernels.low_rank import LowRank
    layer = fp8_linear(ComputePath(FP8_ROWWISE, "test", triton_kernels=True), torch.randn(16, 16),
                        torch.zeros(16).bfloat16())
    # stands for a CUDA input of many rows, which this CPU has not
    monkeypatch.setattr(type(layer), "takes_fp8_rows", lambda self, x: True)
    x = torch.randn(2, 16, dtype=torch.bfloat16)
    lora_leaves_one_pass_blocks(SimpleNamespace(model=torch.nn.Sequential(layer)))
    assert layer.takes_fp8_rows(x)
    layer.weight.sd35_low_rank = LowRank(torch.randn(16, 4), torch.randn(4, 16))
    assert not layer.takes_fp8_rows(x)


def test_the_host_profile_leaves_the_first_step_out_and_counts_per_step():
    from bench.lora_matrix import host_profiled

    def first_step_only():
        return sum(range(1000))

    def every_step():
        return sum(range(100))

    def run(on_step):
        first_step_only()
        every_step()
        on_step()
        for _ in range(3):
            every_step()
            on_step()
        return "sampled"

    result, top = host_profiled(run, steps=4)
    assert result == "sampled"
    by_name = {entry["function"].rsplit(":", 1)[1]: entry for entry in top}
    assert "first_step_only" not in by_name
    assert by_name["every_step"]["calls_per_step"] == 1.0
    assert by_name["every_step"]["us_per_step"] > 0
