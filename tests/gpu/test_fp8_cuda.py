"""The FP8 tensor-core path on a real GPU. CI has none: every test here skips there."""
import pytest
import torch

from devtools.numerics import relative_error

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9),
    reason="needs a CUDA GPU with FP8 tensor cores (compute capability >= 8.9); CI has no GPU")

LARGE_SHAPES = [(8192, 2432, 7296), (8192, 2432, 2432), (8192, 2432, 9728), (8192, 9728, 2432), (308, 2432, 7296)]
FP8_MATMUL_BOUND = 0.06


@pytest.mark.parametrize("rows,cols", [(8192, 2432), (8192, 9728), (308, 1536), (2, 14592), (7, 100)])
def test_triton_row_quantization_matches_reference(rows, cols):
    from sd35_fp8.quant.kernels.fp8_linear import quantize_rows
    from sd35_fp8.quant.kernels.triton_kernels import quantize_rows_triton
    x = torch.randn(rows, cols, device="cuda", dtype=torch.bfloat16) * torch.logspace(-3, 3, rows, device="cuda")[:, None]
    x[0] = 0
    x[-1, 3] = 1e4
    out = torch.full((rows, cols), float("nan"), device="cuda").to(torch.float8_e4m3fn)  # poisoned
    fast, fast_scale = quantize_rows_triton(x)
    out.copy_(fast)
    slow, slow_scale = quantize_rows(x)
    torch.testing.assert_close(fast_scale, slow_scale, rtol=1e-6, atol=0)
    assert not torch.isnan(out.float()).any()
    # Triton's fp32 division may differ from torch's by one ulp, which can round a value to the
    # neighbouring fp8 code: allowed for a few values (one of the 700 in the 7x100 case did on the H200)
    code_steps = (out.view(torch.int8).int() - slow.view(torch.int8).int()).abs()
    assert code_steps.max().item() <= 1
    assert (code_steps > 0).float().mean().item() < 1e-2
    assert relative_error(out.float() * fast_scale, x) <= 0.03


@pytest.mark.parametrize("m,k,n", LARGE_SHAPES)
def test_fp8_linear_on_large_block_shapes_matches_bf16(m, k, n):
    from sd35_fp8.quant.kernels.fp8_linear import fp8_linear_rowwise
    from sd35_fp8.quant.scales import quantize_weight
    from sd35_fp8.quant.kernels.triton_kernels import quantize_rows_triton
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    weight = torch.randn(n, k, device="cuda") * k ** -0.5
    bias = torch.randn(n, device="cuda", dtype=torch.bfloat16) * 0.1
    out = fp8_linear_rowwise(x, *quantize_weight(weight), bias, quantize=quantize_rows_triton)
    reference = x.double() @ weight.double().t() + bias.double()
    assert out.dtype == torch.bfloat16 and relative_error(out, reference) <= FP8_MATMUL_BOUND


@pytest.fixture(scope="module")
def tiny_fp8_model():
    from devtools.comfy_host import import_comfy_in_process
    from devtools.tiny_sd3 import mmdit_state_dict
    import_comfy_in_process()
    from sd35_fp8.nodes.model_loading import build_fp8_model
    from sd35_fp8.quant.policy import POLICIES
    weights = mmdit_state_dict("medium", depth=2, prefix="")
    model, report, path = build_fp8_model(iter(weights.items()), len(weights), 0, "tiny", "tiny",
                                          POLICIES["fp8_default"])
    import comfy.model_management
    comfy.model_management.load_models_gpu([model])
    return model, path


def test_loader_picks_the_fp8_matmul_path(tiny_fp8_model):
    model, path = tiny_fp8_model
    assert path.name == "fp8_matmul_rowwise"
    layer = model.model.diffusion_model.joint_blocks[0].x_block.attn.qkv
    assert layer.compute_path == path and layer.weight.dtype == torch.float8_e4m3fn and layer.weight.is_cuda


def test_joint_block_compiles_without_graph_breaks_or_recompiles(tiny_fp8_model):
    model, _ = tiny_fp8_model
    block = model.model.diffusion_model.joint_blocks[0]
    hidden = 128
    def inputs():
        return (torch.randn(2, 154, hidden, device="cuda", dtype=torch.bfloat16),
                torch.randn(2, 1024, hidden, device="cuda", dtype=torch.bfloat16),  
                torch.randn(2, hidden, device="cuda", dtype=torch.bfloat16))
    context, x, c = inputs()
    torch.set_grad_enabled(False)  # ComfyUI samples without autograd; _scaled_mm has no backward
    explanation = torch._dynamo.explain(block)(context, x, c=c)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    compiled = torch.compile(block, fullgraph=True)
    torch._dynamo.utils.counters.clear()
    eager_out = block(context, x, c=c)
    compiled_out = compiled(context, x, c=c)
    for step in range(3):
        compiled(*inputs()[:2], c=inputs()[2])
    assert not torch._dynamo.utils.counters["recompiles"]
    torch.set_grad_enabled(True)
    # Inductor keeps the norm/modulate intermediates in fp32 where eager rounds them to bf16, so
    # some activations land on the other side of an fp8 rounding step (one e4m3 step is 6-12%):
    # measured 0.015-0.020 on one block.
    for eager, fast in zip(eager_out, compiled_out):
        assert relative_error(fast, eager) <= 0.04


@pytest.mark.parametrize("granularity", ["per_channel", "per_tensor"])
def test_triton_dequantize_matches_reference(granularity):
    from sd35_fp8.quant.scales import dequantize_weight, quantize_weight
    from sd35_fp8.quant.kernels.triton_kernels import dequantize_triton
    weight_fp8, scale = quantize_weight(torch.randn(2432, 9728 + 5, device="cuda"), granularity)
    out = dequantize_triton(weight_fp8, scale, torch.bfloat16)
    torch.testing.assert_close(out, dequantize_weight(weight_fp8, scale, torch.bfloat16), rtol=0, atol=0)


@pytest.mark.parametrize("m,k,n", [(2, 2432, 14592), (1, 2432, 14592), (16, 1536, 9216), (3, 100, 37)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_small_m_kernel_matches_dequantized_reference(m, k, n, dtype):
    from sd35_fp8.quant.scales import quantize_weight
    from sd35_fp8.quant.kernels.small_m_linear import small_m_linear_op, small_m_linear_reference
    small_m_linear = small_m_linear_op()
    x = torch.randn(m, k, device="cuda", dtype=dtype)
    x[-1] = 0 if m > 1 else x[-1]
    weight_fp8, scale = quantize_weight(torch.randn(n, k, device="cuda") * k ** -0.5)
    bias = torch.randn(n, device="cuda", dtype=dtype) * 0.1
    out = small_m_linear(x, weight_fp8, scale, bias)
    reference = x.double() @ (weight_fp8.double() * scale.double()).t() + bias.double()
    # Exact products and fp32 sums: only the final rounding to fp16/bf16 remains.
    assert out.dtype == dtype and relative_error(out, reference) <= 0.005
    if m > 1:
        torch.testing.assert_close(out[-1], bias, rtol=0, atol=0)
    no_bias = small_m_linear(x, weight_fp8, scale, None)
    assert relative_error(no_bias, small_m_linear_reference(x, weight_fp8, scale, None)) <= 0.005


@pytest.mark.parametrize("path", ["fp8_matmul_rowwise", "weight_only"])
@pytest.mark.parametrize("rows", [8192, 2])  # the many-rows kernels and the few-rows kernel
def test_a_lora_beside_the_weight_on_the_triton_paths_eager_and_compiled(path, rows):
    from sd35_fp8.quant.kernels.compute_path import ComputePath
    from sd35_fp8.quant.kernels.linear_dispatch import linear_for
    from sd35_fp8.quant.kernels.low_rank import lora_beside
    from sd35_fp8.quant.scales import dequantize_weight, quantize_weight
    k, n = 2432, 7296
    weight = torch.randn(n, k, device="cuda") * k ** -0.5
    lora = torch.randn(n, 16, device="cuda") @ torch.randn(16, k, device="cuda") * 0.002
    bias = torch.randn(n, device="cuda", dtype=torch.bfloat16) * 0.1
    weight_fp8, scale = quantize_weight(weight)
    compute_path = ComputePath(path, "test", triton_kernels=True)
    # as ComfyUI hands it over
    side = lora_beside(weight_fp8, scale, dequantize_weight(weight_fp8, scale) + lora,
                       with_columns=compute_path.fp8_rows_kernels)
    assert side is not None and side.up.shape[1] == 16
    linear = linear_for(compute_path)
    x = torch.randn(rows, k, device="cuda", dtype=torch.bfloat16)
    expected = x.double() @ (weight + lora).double().t() + bias.double()
    assert relative_error(x.double() @ weight.double().t() + bias.double(), expected) > 2 * FP8_MATMUL_BOUND
    with torch.no_grad():
        eager = linear(x, weight_fp8, scale, bias, side)
        compiled = torch.compile(linear, fullgraph=True)(x, weight_fp8, scale, bias, side)
    for out in (eager, compiled):
        assert out.dtype == torch.bfloat16 and relative_error(out, expected) <= FP8_MATMUL_BOUND


@pytest.mark.parametrize("dtype", ["fp16", "fp32"])
def test_model_compute_dtype_other_than_bf16_samples_on_the_fp8_path(tiny_fp8_model, dtype):
    """ComfyUI's ModelComputeDtype node runs the model's activations in the dtype it names; torch's row-wise FP8
    matmul writes bf16 only (f8f8bf16_rowwise), so the FP8 layers compute in bf16 and hand back that dtype. No
    further from the unquantized model under the same node than at the default dtype (bf16), up to a half."""
    import comfy.sample
    import comfy.sd
    from comfy_extras import nodes_model_advanced
    from devtools.tiny_sd3 import mmdit_state_dict
    model, _ = tiny_fp8_model
    unquantized = comfy.sd.load_diffusion_model_state_dict(mmdit_state_dict("medium", depth=2, prefix=""))
    node = nodes_model_advanced.ModelComputeDtype

    def with_dtype(patcher, name):
        return node().patch(patcher, name)[0] if hasattr(node, "patch") else node.execute(patcher, name).args[0]

    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(1, 16, 32, 32, generator=generator)
    positive, negative = ([[torch.randn(1, 77, 4096, generator=generator),
                            {"pooled_output": torch.randn(1, 2048, generator=generator)}]] for _ in range(2))

    def sample(patcher):
        return comfy.sample.sample(patcher, noise, 2, 4.5, "euler", "sgm_uniform", positive, negative,
                                   torch.zeros_like(noise), seed=0, disable_pbar=True).float()

    default_error = relative_error(sample(model), sample(unquantized))
    error = relative_error(sample(with_dtype(model, dtype)), sample(with_dtype(unquantized, dtype)))
    print(f"{dtype}: {error:.5f} from the unquantized model under the same node; bf16: {default_error:.5f}")
    assert error <= 1.5 * default_error
