"""The op of a Triton kernel: eager calls run the implementation directly, torch.compile traces the
registered op, and with triton_op (torch 2.6+) into a launch of the kernel itself."""
import pytest
import torch

from sd35_fp8.quant.kernels.opaque_op import OpaqueToCompile


def _doubled(x: torch.Tensor) -> torch.Tensor:
    return x * 2


def test_eager_calls_skip_the_op_and_compiled_code_holds_it():
    calls = []

    def impl(x: torch.Tensor) -> torch.Tensor:
        calls.append(torch.compiler.is_compiling())
        return _doubled(x)

    # registered for CUDA only, as the kernels are: a CPU call that reached the op would find no kernel
    opaque = OpaqueToCompile("sd35_fp8_test::doubled_cuda", impl, lambda x: torch.empty_like(x))
    x = torch.randn(4, 3)
    torch.testing.assert_close(opaque(x), x * 2, rtol=0, atol=0)
    assert calls == [False]
    graphs = []

    def record_graph(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    cpu_op = OpaqueToCompile("sd35_fp8_test::doubled_cpu", impl, lambda x: torch.empty_like(x), device_types="cpu")
    compiled = torch.compile(lambda x: cpu_op(x) + 1, backend=record_graph, fullgraph=True)
    torch.testing.assert_close(compiled(x), x * 2 + 1, rtol=0, atol=0)
    targets = [str(node.target) for node in graphs[0].graph.nodes if node.op == "call_function"]
    assert any("sd35_fp8_test.doubled_cpu" in target for target in targets), targets


def _fake_cuda(*shape, dtype=torch.bfloat16):
    return torch.empty(*shape, dtype=dtype, device="cuda")


@pytest.mark.parametrize("name", ["gelu_quantize_rows", "small_m_linear"])
def test_compiled_code_launches_the_triton_kernel_itself(name):
    # Traced as torch.compile's AOT stage traces (fake CUDA tensors: no GPU here), each op must become
    # a launch of its Triton kernel, which Inductor then launches from its own code, not a call of
    # an opaque op through the dispatcher.
    pytest.importorskip("triton", reason="Triton is not installed")
    if not hasattr(torch.library, "triton_op"):
        pytest.skip("torch < 2.6 has no triton_op: the ops stay opaque custom ops there")
    from torch._functorch.aot_autograd import aot_export_module
    from torch._higher_order_ops.triton_kernel_wrap import kernel_side_table
    from torch._subclasses.fake_tensor import FakeTensorMode

    from sd35_fp8.quant.kernels.gelu_quantize import gelu_quantize_rows_op
    from sd35_fp8.quant.kernels.small_m_linear import small_m_linear_op
    op, kernel, make_args = {
        "gelu_quantize_rows": (gelu_quantize_rows_op().op, "_gelu_quantize_rows_kernel",
                               lambda: [_fake_cuda(300, 9728)]),
        "small_m_linear": (small_m_linear_op().op, "_small_m_linear_kernel",
                           lambda: [_fake_cuda(2, 1536), _fake_cuda(9216, 1536, dtype=torch.float8_e4m3fn),
                                    _fake_cuda(9216, 1, dtype=torch.float32), _fake_cuda(9216)])}[name]

    class Call(torch.nn.Module):
        def forward(self, *args):
            out = op(*args)
            return tuple(out) if isinstance(out, tuple) else (out,)
    with FakeTensorMode():
        graph, _ = aot_export_module(Call(), make_args(), trace_joint=False)
    launches = [node for node in graph.graph.nodes
                if node.target is torch.ops.higher_order.triton_kernel_wrapper_functional]
    assert len(launches) == 1, graph.code
    launched = kernel_side_table.get_kernel(launches[0].kwargs["kernel_idx"])
    assert getattr(launched, "fn", launched).__name__ == kernel
    assert not [node for node in graph.graph.nodes if "sd35_fp8" in str(node.target)], graph.code
