"""bench/sd35_bench.py on the CPU (the benchmark itself needs a GPU): with a tiny model, the time the
host took to queue each step is recorded beside the step's time, and never exceeds it; the A/B
variant's switch routes eager kernel calls through their custom ops, and only while it is on; a
profile's trace gives the runtime calls that held the host longest, each with its op."""
import json

import pytest
import torch

from bench.sd35_bench import conditioning, custom_ops_in_eager, sample, variant_context
from devtools.built_again import built_again
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


def test_the_ab_switch_leaves_compiled_activation_quantization_to_inductor_while_on(monkeypatch):
    import pack_import  # noqa: F401  (the pack as `sd35_fp8`, as the benchmark imports it)
    from torch._subclasses.fake_tensor import FakeTensorMode
    from sd35_fp8.quant.kernels.row_quantize import compiled_code_launches_kernels, kernel_takes
    with FakeTensorMode():
        medium_rows = torch.empty(8, 1536, dtype=torch.bfloat16, device="cuda")
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert kernel_takes(medium_rows) == compiled_code_launches_kernels()
    with variant_context("ours_fp8_inductor_quantize"):
        assert not kernel_takes(medium_rows)
    assert kernel_takes(medium_rows) == compiled_code_launches_kernels()


def test_the_ab_switch_sends_every_weight_through_comfyuis_cast_while_on(monkeypatch):
    import_comfy_in_process()
    from devtools.fp8_layer import fp8_linear
    from sd35_fp8.nodes import comfy_versions
    from sd35_fp8.quant.kernels.compute_path import WEIGHT_ONLY, ComputePath
    layer = fp8_linear(ComputePath(WEIGHT_ONLY, "test"), torch.randn(16, 16), torch.zeros(16).bfloat16())
    casts = []
    comfyui_cast = comfy_versions.cast_bias_weight
    monkeypatch.setattr(comfy_versions, "cast_bias_weight", lambda *args, **kwargs: casts.append(1) or comfyui_cast(*args, **kwargs))
    x = torch.randn(2, 16, dtype=torch.bfloat16)
    layer(x)
    with variant_context("ours_fp8_comfy_cast"):
        layer(x)
    layer(x)
    assert casts == [1]


@pytest.mark.parametrize("variant", ["stock_default", "ours_fp8"])
def test_models_can_be_built_again_as_torch_compile_model_asks_under_dynamic_vram(variant):
    """ComfyUI 0.33's TorchCompileModel compiles a copy built outside DynamicVRAM through the loader's
    reload; the benchmark's models say how, as loaders do (clone(force_deepcopy=True): the same path on
    any device)."""
    import_comfy_in_process()
    from bench.sd35_bench import build
    weights = mmdit_state_dict("medium", depth=1, seed=0, prefix="")
    model = build(variant, weights)
    copy = built_again(model)
    assert copy.model is not model.model
    built, again = model.model.state_dict(), copy.model.state_dict()
    assert built.keys() == again.keys()
    assert all(torch.equal(again[k].view(torch.uint8), v.view(torch.uint8)) for k, v in built.items())


def test_host_waits_names_the_longest_runtime_calls_and_the_innermost_op_around_each(tmp_path):
    from bench.sd35_bench import _host_waits
    events = [
        {"cat": "cpu_op", "name": "aten::to", "ts": 0, "dur": 100, "tid": 1},
        {"cat": "cpu_op", "name": "aten::copy_", "ts": 10, "dur": 80, "tid": 1},
        {"cat": "cuda_runtime", "name": "cudaMemcpyAsync", "ts": 20, "dur": 60, "tid": 1},
        # the same span on another thread: not the call's op
        {"cat": "cpu_op", "name": "aten::add", "ts": 19, "dur": 2, "tid": 2},
        {"cat": "cpu_op", "name": "graph", "ts": 200, "dur": 50, "tid": 1},
        {"cat": "cuda_runtime", "name": "cudaGraphLaunch", "ts": 210, "dur": 30, "tid": 1},
        {"cat": "cuda_runtime", "name": "cudaMemcpyAsync", "ts": 300, "dur": 4, "tid": 1},
        {"cat": "kernel", "name": "k", "ts": 20, "dur": 500, "tid": 7},
    ]
    trace = tmp_path / "trace.json"
    trace.write_text(json.dumps({"traceEvents": events}))
    waits = _host_waits(trace, top=2)
    assert waits["by_call_ms"] == {"cudaMemcpyAsync": {"ms": 0.06, "calls": 2}, "cudaGraphLaunch": {"ms": 0.03, "calls": 1}}
    assert waits["longest"] == [{"ms": 0.06, "call": "cudaMemcpyAsync", "inside": "aten::copy_"},
                                {"ms": 0.03, "call": "cudaGraphLaunch", "inside": "graph"}]


def test_the_ab_switch_turns_fast_accumulation_off_while_on(monkeypatch):
    from sd35_fp8.quant.kernels import fp8_linear
    calls = []
    monkeypatch.setattr(torch, "_scaled_mm", lambda *args, **kwargs: calls.append(kwargs["use_fast_accum"]))
    operands = (torch.zeros(2, 16, dtype=torch.float8_e4m3fn), torch.ones(2, 1), torch.zeros(4, 16, dtype=torch.float8_e4m3fn),
                torch.ones(4, 1), None, torch.bfloat16)
    fp8_linear.fp8_rows_matmul(*operands)
    with variant_context("ours_fp8_promoted_accum"):
        fp8_linear.fp8_rows_matmul(*operands)
    fp8_linear.fp8_rows_matmul(*operands)
    assert calls == [True, False, True]
