"""bench/sd35_bench.py on the CPU (the benchmark itself needs a GPU): with a tiny model, the time the
host took to queue each step is recorded beside the step's time, and never exceeds it; the A/B
variant's switch routes eager kernel calls through their custom ops, and only while it is on."""
import pytest
import torch

from bench.sd35_bench import conditioning, custom_ops_in_eager, sample
from devtools.comfy_host import import_comfy_in_process
from devtools.tiny_sd3 import mmdit_state_dict


def test_each_steps_queue_time_is_recorded_within_its_step_time():
    import_comfy_in_process()
    import comfy.sd
    model = comfy.sd.load_diffusion_model_state_dict(mmdit_state_dict("medium", depth=1, seed=0, prefix=""))
    positive, negative = conditioning(0)
    step_times, issue_times = [], []
    sample(model, 64, 4, 0, positive, negative, step_times, issue_times)
    assert len(issue_times) == len(step_times) == 4
    # on the CPU nothing is queued: the host computes each step before the callback
    assert all(0 < queued <= step for queued, step in zip(issue_times, step_times))


def _doubled(x: torch.Tensor) -> torch.Tensor:
    return x * 2


def test_the_ab_switch_sends_eager_calls_through_the_custom_op_while_on():
    import pack_import  # noqa: F401  (the pack as `sd35_fp8`, as the benchmark imports it)
    from sd35_fp8.quant.kernels.opaque_op import OpaqueToCompile
    # registered for CUDA only: a CPU call that reaches the op finds no kernel
    doubled = OpaqueToCompile("sd35_fp8_test::bench_doubled", _doubled, lambda x: torch.empty_like(x))
    x = torch.ones(3)
    assert torch.equal(doubled(x), x * 2)
    with custom_ops_in_eager(), pytest.raises(NotImplementedError):
        doubled(x)
    assert torch.equal(doubled(x), x * 2)
