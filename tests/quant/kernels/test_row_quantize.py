"""Row-wise FP8 quantization of a linear's input in one pass: the Triton kernel run on the CPU by
Triton's interpreter against the reference, on rows where they lie (a slice of a joint sequence's
tokens); and what torch.compile traces a row-wise FP8 linear into, on fake CUDA tensors (tests/gpu
runs the kernel compiled)."""
import pytest
import torch

from devtools.numerics import fp8_steps_apart
from devtools.triton_interpreter import run_interpreted
from sd35_fp8.quant.kernels import row_quantize
from sd35_fp8.quant.kernels.compute_path import FP8_ROWWISE, ComputePath
from sd35_fp8.quant.kernels.fp8_linear import quantize_rows
from sd35_fp8.quant.scales import MIN_SCALE

# The interpreter has no bf16: float16 and float32 here, bf16 on the GPU. 200 columns: a 128-wide
# head and a 128-wide tail, partly masked (masked lanes must not reach the abs-max); 96: 64 + 32;
# 256: a head alone. The slice: the image tokens of a joint sequence (batch 2, 6 text tokens first),
# rows whose batch stride is not tokens x row; 48 rows, 16 a program. 7 rows: one a program.
_INTERPRETED = """
import pack_import, torch
from devtools.triton_interpreter import use_torch_fp8_rounding
from sd35_fp8.quant.kernels.triton_kernels import quantize_rows_triton
use_torch_fp8_rounding()
generator = torch.Generator().manual_seed(0)
wide = torch.randn(40, 300, generator=generator) * 2
wide[1] = 0
wide[4] *= 40
wide[5, 17] = 900
joint = torch.randn(2, 30, 96, generator=generator).half()
joint[1, 9] = 0
inputs = [wide.half()[:, :200], wide[:, :256].contiguous(), joint[:, 6:], wide[:7, :96].contiguous()]
torch.save([(x, *quantize_rows_triton(x)) for x in inputs], {path!r})
"""


def test_interpreted_kernel_matches_reference(tmp_path):
    pytest.importorskip("triton", reason="Triton is not installed")
    path = tmp_path / "runs.pt"
    run_interpreted(_INTERPRETED.format(path=str(path)), timeout=300)
    runs = torch.load(path)
    assert [tuple(x.shape) for x, _, _ in runs] == [(40, 200), (40, 256), (2, 24, 96), (7, 96)]
    assert not runs[2][0].is_contiguous()
    for x, x_fp8, scale in runs:
        reference, reference_scale = quantize_rows(x)
        assert x_fp8.shape == reference.shape and scale.shape == reference_scale.shape
        # the same fp32 arithmetic: the abs-max is exact, so the scales and the values are the reference's
        torch.testing.assert_close(scale, reference_scale, rtol=0, atol=0)
        assert fp8_steps_apart(x_fp8, reference).max() == 0
    wide_fp8, wide_scale = runs[0][1:]
    assert wide_scale[1] == MIN_SCALE and not wide_fp8[1].float().any()
    assert wide_scale[5] == 900 / 448  # an outlier in the head sets its row's scale
    joint_fp8, joint_scale = runs[2][1:]
    assert joint_scale[24 + 3] == MIN_SCALE and not joint_fp8[24 + 3].float().any()  # token 9 of sample 1


def test_reference_takes_rows_of_any_shape():
    joint = torch.randn(2, 30, 96)
    sliced = joint[:, 6:]
    for x_fp8, expected in zip(quantize_rows(sliced), quantize_rows(sliced.reshape(-1, 96).contiguous())):
        assert torch.equal(x_fp8.float(), expected.float())


def _fake_cuda(*shape, dtype=torch.bfloat16):
    return torch.empty(*shape, dtype=dtype, device="cuda")


@pytest.mark.parametrize("cols, takes_op", [(1536, True), (512, False)])
def test_compiled_linear_traces_whole_with_the_op_on_wide_rows(cols, takes_op):
    # torch.compile's Dynamo traces a row-wise FP8 linear on a slice of a joint attention's output
    # (fake CUDA tensors: no GPU here) in one graph, no break: 1536 columns (SD3.5 Medium's width) as
    # a call of the op, 512 as Inductor's own math.
    pytest.importorskip("triton", reason="Triton is not installed")
    if not row_quantize.compiled_code_launches_kernels():
        pytest.skip("torch < 2.6 has no triton_op: compiled code keeps Inductor's quantization there")
    from torch._subclasses.fake_tensor import FakeTensorMode

    from sd35_fp8.quant.kernels.linear_dispatch import linear_for
    linear = linear_for(ComputePath(FP8_ROWWISE, "test", triton_kernels=True))
    graphs = []

    def record(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    torch._dynamo.reset()
    proj = torch.compile(lambda attention, *layer: linear(attention[:, 154:], *layer), backend=record, fullgraph=True)
    with FakeTensorMode(allow_non_fake_inputs=True):
        proj(_fake_cuda(2, 4250, cols), _fake_cuda(cols, cols, dtype=torch.float8_e4m3fn),
             _fake_cuda(cols, 1, dtype=torch.float32), _fake_cuda(cols))
    targets = [str(node.target) for node in graphs[0].graph.nodes if node.op in ("call_function", "call_method")]
    assert any("_scaled_mm" in target for target in targets), graphs[0].code
    assert any("sd35_fp8.quantize_rows" in target for target in targets) == takes_op, graphs[0].code
    assert any("amax" in target for target in targets) != takes_op, graphs[0].code


@pytest.mark.parametrize("cols, launched", [(1536, True), (512, False)])
def test_compiled_linear_launches_the_kernel_on_wide_rows_in_place(monkeypatch, cols, launched):
    # A row-wise FP8 linear on the image tokens of a joint attention's output (a slice), traced as
    # torch.compile's AOT stage traces: 1536 columns (SD3.5 Medium's width) take one launch of the
    # kernel, reading the slice where it lies (no copy before it); 512, Inductor's own fused math.
    pytest.importorskip("triton", reason="Triton is not installed")
    if not row_quantize.compiled_code_launches_kernels():
        pytest.skip("torch < 2.6 has no triton_op: compiled code keeps Inductor's quantization there")
    from torch._functorch.aot_autograd import aot_export_module
    from torch._higher_order_ops.triton_kernel_wrap import kernel_side_table
    from torch._subclasses.fake_tensor import FakeTensorMode

    from sd35_fp8.quant.kernels.linear_dispatch import linear_for
    linear = linear_for(ComputePath(FP8_ROWWISE, "test", triton_kernels=True))

    class Proj(torch.nn.Module):
        def forward(self, attention, weight_fp8, weight_scale, bias):
            return (linear(attention[:, 154:], weight_fp8, weight_scale, bias),)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    with FakeTensorMode():
        args = [_fake_cuda(2, 4250, cols), _fake_cuda(cols, cols, dtype=torch.float8_e4m3fn),
                _fake_cuda(cols, 1, dtype=torch.float32), _fake_cuda(cols)]
        graph, _ = aot_export_module(Proj(), args, trace_joint=False)
    launches = [node for node in graph.graph.nodes if node.target is torch.ops.higher_order.triton_kernel_wrapper_functional]
    targets = [str(node.target) for node in graph.graph.nodes if node.op == "call_function"]
    assert any("_scaled_mm" in target for target in targets), graph.code
    if launched:
        assert len(launches) == 1, graph.code
        kernel = kernel_side_table.get_kernel(launches[0].kwargs["kernel_idx"])
        assert getattr(kernel, "fn", kernel).__name__ == "_quantize_rows_kernel"
        assert not [target for target in targets if "clone" in target or "copy" in target], graph.code
    else:
        assert not launches, graph.code
        assert any("amax" in target for target in targets), graph.code
