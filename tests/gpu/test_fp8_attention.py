"""FP8 attention (quant/kernels/fp8_attention.py, nodes/fp8_attention.py) on a real GPU: the Triton
kernel at SD3.5's joint attention shapes against its reference and against fp32 attention, the op
through torch's checks, and the override in eager and compiled calls. CI has no GPU: every test here
skips there (tests/quant/kernels/test_fp8_attention.py runs the kernel under Triton's interpreter); and
the loader's model, whose default it is, sampling with it eager and compiled against the same model with
bf16 attention."""
import pytest
import torch

from devtools.numerics import relative_error
from tests.gpu.test_gelu_quantize import tiny_medium_models
from tests.gpu.test_norm_quantize import sample_one_step
from tests.quant.kernels.test_fp8_attention import exact_attention

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9),
    reason="needs a CUDA GPU with FP8 tensor cores (compute capability >= 8.9); CI has no GPU")


KERNEL = "_fp8_attention_kernel"
ATTENTION_CALLS = 3  # the tiny Medium MMDiT's: two joint attentions and block 0's attn2 (v 4-D there)


def attention_inputs(heads, tokens=4096 + 154, magnitude=1.0):
    return [(torch.randn(2, tokens, heads * 64, device="cuda") * magnitude).bfloat16() for _ in range(3)]


@pytest.mark.parametrize("magnitude", [1.0, 3.0])  # near-uniform and peaked softmax rows
@pytest.mark.parametrize("heads", [38, 24])  # Large, Medium
def test_kernel_rounds_as_its_reference(heads, magnitude):
    from sd35_fp8.quant.kernels.fp8_attention import fp8_attention_reference
    from sd35_fp8.quant.kernels.triton_attention import DEFAULT_CONFIG, fp8_attention_triton
    q, k, v = attention_inputs(heads, magnitude=magnitude)
    out = fp8_attention_triton(q, k, v, heads)
    reference = fp8_attention_reference(q, k, v, heads, block=DEFAULT_CONFIG[1])
    exact = exact_attention(q, k, v, heads)
    kernel_error, reference_error = relative_error(out, exact), relative_error(reference, exact)
    print(f"heads {heads}, magnitude {magnitude}: kernel {kernel_error:.4f}, reference {reference_error:.4f}, "
          f"apart {relative_error(out, reference):.4f}")
    assert out.shape == q.shape and out.dtype == q.dtype and torch.isfinite(out).all()
    # the kernel rounds its probabilities against running row maxima, the reference against the final
    # ones: a few rounding steps apart, as accurate (interpreted at small sizes: 0.4-1.8% apart)
    assert relative_error(out, reference) <= 0.03
    assert kernel_error <= 1.05 * reference_error + 1e-3


def test_ragged_token_counts_and_blocks():
    from sd35_fp8.quant.kernels.fp8_attention import fp8_attention_reference
    from sd35_fp8.quant.kernels.triton_attention import fp8_attention_triton
    for tokens, config in ((77, (64, 64, 4, 2)), (333, (128, 128, 8, 3)), (1000, (128, 64, 8, 2))):
        q, k, v = attention_inputs(3, tokens=tokens)
        out = fp8_attention_triton(q, k, v, 3, config=config)
        reference = fp8_attention_reference(q, k, v, 3, block=config[1])
        assert relative_error(out, reference) <= 0.03, (tokens, config)


def test_the_custom_op_passes_torchs_checks():
    from sd35_fp8.quant.kernels.fp8_attention import fp8_attention_op
    checks = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
    torch.library.opcheck(fp8_attention_op().op, (*attention_inputs(2, tokens=200), 2), test_utils=checks)


def test_the_override_takes_unmasked_calls_and_passes_on_the_rest():
    from functools import partial
    from devtools.comfy_host import import_comfy_in_process
    import_comfy_in_process()
    from comfy.ldm.modules.attention import optimized_attention
    from sd35_fp8.nodes.fp8_attention import OVERRIDE_KEY, attention_fp8_first
    from sd35_fp8.quant.kernels.fp8_attention import fp8_attention_op
    passed_on = []

    def fallback(comfy_attention, q, k, v, heads, **kwargs):
        passed_on.append(kwargs["mask"] is not None)
        return comfy_attention(q, k, v, heads, **kwargs)
    options = {OVERRIDE_KEY: partial(attention_fp8_first, fp8_attention_op(), fallback)}
    q, k, v = attention_inputs(4, tokens=700)

    def attend(q, k, v, mask=None):
        return optimized_attention(q, k, v, 4, mask=mask, transformer_options=options)
    out = attend(q, k, v)
    assert passed_on == []
    assert relative_error(out, exact_attention(q, k, v, 4)) <= 0.08
    # compiled code launches the same kernel: the same values
    assert torch.equal(torch.compile(attend)(q, k, v), out)
    # v as ComfyUI's split_qkv leaves it, (batch, tokens, heads, head_dim): the kernel too
    assert torch.equal(attend(q, k, v.view(2, 700, 4, 64)), out)
    assert passed_on == []
    masked = attend(q, k, v, torch.zeros(700, 700, device="cuda", dtype=torch.bfloat16))
    assert passed_on == [True]
    # a precision asked for (ComfyUI's --force-upcast-attention): not FP8
    optimized_attention(q, k, v, 4, attn_precision=torch.float32, transformer_options=options)
    assert passed_on == [True, False]
    assert relative_error(masked, exact_attention(q, k, v, 4)) <= 0.01  # ComfyUI's bf16 attention


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The tiny Medium MMDiT through the diffusion-model loader: with its default attention (fp8), and
    with bf16."""
    return tuple(tiny_medium_models(tmp_path_factory, "fp8", "bf16"))


def test_the_loaders_model_attends_in_fp8_eager_and_compiled(models):
    from comfy_api.torch_helpers import set_torch_compile_wrapper
    fp8, bf16 = models
    eager, eager_calls = sample_one_step(fp8, kernel=KERNEL)
    # cond and uncond in one batch: one forward, or two where ComfyUI splits them
    assert eager_calls in (ATTENTION_CALLS, 2 * ATTENTION_CALLS)
    reference, reference_calls = sample_one_step(bf16, kernel=KERNEL)
    assert reference_calls == 0
    compiled_model = fp8.clone()
    set_torch_compile_wrapper(model=compiled_model, backend="inductor")
    compiled, compiled_calls = sample_one_step(compiled_model, warm_up=True, kernel=KERNEL)
    assert compiled_calls == eager_calls
    print(f"FP8 against bf16 attention, latent: eager {relative_error(eager, reference):.5f}, "
          f"compiled {relative_error(compiled, reference):.5f}")
    # one step of the tiny model: 0.029 eager, 0.030 compiled on an H200 (0.007 on the CPU with the reference's
    # rounding in every attention)
    assert relative_error(eager, reference) <= 0.05
    assert relative_error(compiled, reference) <= 0.05
