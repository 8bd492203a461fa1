"""Our models' attention with cuDNN's kernel first on Hopper (nodes/attention_backend.py), inside the real
ComfyUI (in-process, CPU): the override computes what ComfyUI's PyTorch attention computes, leaves every
other attention to ComfyUI, is taken only on Hopper, and ComfyUI's sampler calls it for our model.
Which kernel torch picks on the GPU: tests/gpu/test_cudnn_attention.py."""
import pytest
import torch

from devtools.tiny_sd3 import write_diffusion_model
from tests.nodes.test_loaders import load_diffusion_model


def _qkv(heads=4, head_dim=16, tokens=40, batch=2):
    return [torch.randn(batch, tokens, heads * head_dim) for _ in range(3)]


@pytest.mark.parametrize("skip_reshape,skip_output_reshape", [(False, False), (False, True), (True, False), (True, True)])
def test_the_layouts_are_comfyuis(pack, skip_reshape, skip_output_reshape):
    from comfy.ldm.modules.attention import attention_pytorch
    from sd35_fp8.nodes.attention_backend import sdpa_in_comfy_layout
    q, k, v = _qkv()
    if skip_reshape:
        q, k, v = (t.reshape(2, 40, 4, 16).transpose(1, 2) for t in (q, k, v))
    ours = sdpa_in_comfy_layout(q, k, v, 4, skip_reshape, skip_output_reshape)
    comfy = attention_pytorch(q, k, v, 4, skip_reshape=skip_reshape, skip_output_reshape=skip_output_reshape)
    assert ours.shape == comfy.shape
    torch.testing.assert_close(ours, comfy, rtol=0, atol=0)


def test_other_attention_stays_comfyuis(pack):
    from sd35_fp8.nodes.attention_backend import attention_cudnn_first
    calls = []

    def attention_sage(q, k, v, heads, **kwargs):  # a user's choice at launch
        calls.append(kwargs)
        return q

    q, k, v = _qkv()
    assert attention_cudnn_first(attention_sage, q, k, v, 4, skip_output_reshape=True, scale=0.5) is q
    assert calls == [{"mask": None, "attn_precision": None, "skip_reshape": False, "skip_output_reshape": True,
                      "scale": 0.5}]

    def attention_pytorch(q, k, v, heads, **kwargs):  # ComfyUI's, here on the CPU or with a mask
        calls.append(kwargs["mask"])
        return k

    mask = torch.zeros(40, 40)
    assert attention_cudnn_first(attention_pytorch, q, k, v, 4) is k
    assert attention_cudnn_first(attention_pytorch, q, k, v, 4, mask=mask) is k
    assert calls[1] is None and calls[2] is mask
    if torch.cuda.is_available():  # with an option (0.33 reads scale, 0.3.75 ignores it), on the GPU too
        q, k, v = (t.cuda().repeat(1, 100, 1) for t in (q, k, v))
        assert attention_cudnn_first(attention_pytorch, q, k, v, 4, scale=0.5) is k


@pytest.mark.parametrize("capability,applies", [((9, 0), True), ((8, 9), False), ((8, 0), False), ((10, 0), False),
                                                ((12, 0), False)])
def test_only_hopper_takes_it(pack, monkeypatch, capability, applies):
    from sd35_fp8.nodes.attention_backend import cudnn_attention_applies
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert cudnn_attention_applies(torch.device("cuda", 0)) is applies
    assert not cudnn_attention_applies(torch.device("cpu"))


def test_comfyuis_sampler_calls_it_for_our_model(pack, models_dir, monkeypatch):
    import comfy.ldm.modules.attention as attention
    import comfy.sample
    from sd35_fp8.nodes import attention_backend
    write_diffusion_model(models_dir / "diffusion_models" / "medium.safetensors", variant="medium",
                          seed=int(torch.randint(0, 10**6, ())))
    model = load_diffusion_model(pack, "medium.safetensors")
    loaded_options = model.model_options.get("transformer_options", {})
    assert ("optimized_attention_override" in loaded_options) == \
        attention_backend.cudnn_attention_applies(model.load_device)
    loaded_options.pop("optimized_attention_override", None)  # `plain` below is ComfyUI's attention alone
    calls, override = [], attention_backend.attention_cudnn_first

    def counted(comfy_attention, *args, **kwargs):
        calls.append(comfy_attention.__name__)
        return override(comfy_attention, *args, **kwargs)
    monkeypatch.setattr(attention_backend, "attention_cudnn_first", counted)
    overridden = model.clone()
    attention_backend.use_cudnn_attention(overridden)
    assert "optimized_attention_override" not in model.model_options.get("transformer_options", {})
    generator = torch.Generator().manual_seed(0)
    positive, negative = ([[torch.randn(1, 77, 4096, generator=generator),
                            {"pooled_output": torch.randn(1, 2048, generator=generator)}]] for _ in range(2))
    latent = torch.zeros(1, 16, 16, 16)
    noise = torch.randn(latent.shape, generator=generator)

    def sample(patcher):
        with torch.inference_mode():
            return comfy.sample.sample(patcher, noise, 1, 4.5, "euler", "sgm_uniform", positive, negative, latent,
                                       seed=0, disable_pbar=True)
    plain = sample(model)
    assert not calls
    through_override = sample(overridden.clone())  # a clone of it (LoraLoader's) keeps it
    # the tiny Medium: two joint blocks, block 0 with its second self-attention; cond and uncond in one batch
    # ComfyUI's attention of this host (on the CPU its sub-quadratic one, which the override hands back)
    assert calls and set(calls) == {attention.optimized_attention.__name__} and len(calls) % 3 == 0
    torch.testing.assert_close(through_override, plain, rtol=0, atol=0)
