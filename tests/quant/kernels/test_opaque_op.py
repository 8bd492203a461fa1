"""The opaque op: eager calls run the implementation directly, torch.compile traces the registered op."""
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
