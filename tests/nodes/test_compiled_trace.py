"""The FP8 MMDiT as the loader builds it for a GPU with FP8 tensor cores, traced by torch.compile's
Dynamo on fake CUDA tensors (no GPU here): one graph, no break, with each of our Triton kernels in it
as its op, which compiled code launches itself. A break costs a compiled step host time at every call,
and compiled code that calls into Python (tests/gpu runs the compiled model)."""
import pytest
import torch

from devtools.tiny_sd3 import mmdit_state_dict

OUR_OPS = {"sd35_fp8.layer_norm_modulate_quantize_rows.default", "sd35_fp8.gelu_quantize_rows.default",
           "sd35_fp8.quantize_rows.default", "sd35_fp8.small_m_linear.default"}


def _on_fake_cuda(module):
    """module's parameters and buffers as fake CUDA tensors of the same shapes and dtypes (the active
    FakeTensorMode's)."""
    for submodule in module.modules():
        for name, parameter in list(submodule._parameters.items()):
            if parameter is not None:
                submodule._parameters[name] = torch.nn.Parameter(torch.empty_like(parameter, device="cuda"),
                                                                 requires_grad=False)
        for name, buffer in list(submodule._buffers.items()):
            if buffer is not None:
                submodule._buffers[name] = torch.empty_like(buffer, device="cuda")


def test_the_fp8_model_compiles_to_one_graph_with_our_kernels(pack, monkeypatch):
    pytest.importorskip("triton", reason="Triton is not installed")
    from torch._subclasses.fake_tensor import FakeTensorMode
    import comfy.ldm.modules.attention
    import comfy.ldm.modules.diffusionmodules.mmdit
    from sd35_fp8.nodes import model_loading
    from sd35_fp8.quant.kernels import row_quantize
    from sd35_fp8.quant.kernels.compute_path import FP8_ROWWISE, ComputePath
    from sd35_fp8.quant.policy import POLICIES
    if not row_quantize.compiled_code_launches_kernels():
        pytest.skip("torch < 2.6 has no triton_op: compiled code calls our kernels through opaque ops there")
    monkeypatch.setattr(model_loading, "compute_path_for_device",
                        lambda device, force_weight_only=False: ComputePath(FP8_ROWWISE, "test", triton_kernels=True))
    # On a GPU ComfyUI attends through torch's SDPA; on this CPU it would pick a kernel that asks CUDA
    # for its free memory.
    monkeypatch.setattr(comfy.ldm.modules.diffusionmodules.mmdit, "optimized_attention",
                        comfy.ldm.modules.attention.attention_pytorch)
    # the tiny model's 128 columns as if wider than Inductor's one-pass limit, as SD3.5's are
    monkeypatch.setattr(row_quantize, "INDUCTOR_ONE_PASS_COLS", 64)
    weights = mmdit_state_dict("medium", depth=2, prefix="")
    model, _, _ = model_loading.build_fp8_model(iter(weights.items()), len(weights),
                                                sum(t.numel() for t in weights.values()), "tiny", "tiny",
                                                POLICIES["fp8_default"])
    diffusion_model = model.model.diffusion_model
    torch._dynamo.reset()
    with FakeTensorMode(allow_non_fake_inputs=True):
        _on_fake_cuda(diffusion_model)
        inputs = dict(x=torch.empty(2, 16, 16, 16), timesteps=torch.empty(2), context=torch.empty(2, 77, 4096),
                      y=torch.empty(2, 2048))
        explanation = torch._dynamo.explain(diffusion_model)(
            **{name: tensor.to("cuda", torch.bfloat16) for name, tensor in inputs.items()})
    breaks = [f"{reason.reason[:200]} at {reason.user_stack[-1].filename}:{reason.user_stack[-1].lineno}"
              for reason in explanation.break_reasons]
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1, breaks
    called = {str(node.target) for node in explanation.graphs[0].graph.nodes if node.op == "call_function"}
    assert OUR_OPS <= called, called
