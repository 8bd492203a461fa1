"""ComfyUI's SD3.5 ControlNet (ControlNetLoader -> ControlNetApplyAdvanced -> KSampler) on our FP8 model,
in-process in the real ComfyUI, against the unquantized model with the same ControlNet. The ControlNet is
a model of its own (ComfyUI's, unquantized) whose block outputs the MMDiT adds to its image stream
between joint blocks."""
import math

import torch
from safetensors.torch import save_file

from devtools.numerics import relative_error
from devtools.tiny_sd3 import write_checkpoint

# Growth of the final latent's error over the same models' without the ControlNet: -0.015 to -0.005 over
# seven draws on both hosts (its unquantized output dilutes the FP8 layers' share), with an effect of 0.60-0.70.
CONTROLNET_ERROR_GROWTH = 0.01


def tiny_sd35_controlnet(depth, seed):
    """A random SD3.5 ControlNet (Stability's format: ComfyUI's ControlNetEmbedder keys and control_type)
    for an MMDiT of this depth (hidden size 64 * depth)."""
    import comfy.ops
    from comfy.cldm.dit_embedder import ControlNetEmbedder
    model = ControlNetEmbedder(img_size=None, patch_size=2, in_chans=16, attention_head_dim=64,
                               num_attention_heads=depth, adm_in_channels=2048, num_layers=1,
                               main_model_double=depth, double_y_emb=False, device="cpu", dtype=torch.float32,
                               operations=comfy.ops.manual_cast)
    generator = torch.Generator().manual_seed(seed)
    state_dict = {}
    for name, tensor in model.state_dict().items():
        fan_in = math.prod(tensor.shape[1:]) if tensor.ndim > 1 else 1
        std = 1 / math.sqrt(fan_in) if tensor.ndim > 1 else 0.02
        state_dict[name] = (torch.randn(tensor.shape, generator=generator) * std).to(torch.bfloat16)
    state_dict["control_type"] = torch.tensor([0])  # blur
    return state_dict


def test_a_controlnet_samples_the_fp8_model_as_the_unquantized_one(pack, models_dir):
    import folder_paths
    import nodes
    seed = int(torch.randint(0, 10**6, ()))
    write_checkpoint(models_dir / "checkpoints" / "base.safetensors", clip_l=False, seed=seed)
    loader = pack.NODE_CLASS_MAPPINGS["SD35FP8CheckpointLoader"]()
    (fp8, _, vae), (unquantized, _, _) = (loader.load("base.safetensors", policy)[:3]
                                          for policy in ("fp8_default", "off"))
    (models_dir / "controlnet").mkdir()
    save_file(tiny_sd35_controlnet(2, seed + 1), str(models_dir / "controlnet" / "blur.safetensors"))
    folder_paths.add_model_folder_path("controlnet", str(models_dir / "controlnet"), is_default=True)
    control_net, = nodes.ControlNetLoader().load_controlnet("blur.safetensors")

    generator = torch.Generator().manual_seed(seed)
    positive, negative = ([[torch.randn(1, 77, 4096, generator=generator),
                            {"pooled_output": torch.randn(1, 2048, generator=generator)}]] for _ in range(2))
    hint = torch.rand(1, 128, 128, 3, generator=generator)
    controlled = nodes.ControlNetApplyAdvanced().apply_controlnet(positive, negative, control_net, hint, 0.5, 0.0, 1.0,
                                                                  vae=vae)
    latent = {"samples": torch.zeros(1, 16, 16, 16)}

    def sample(model, conds):
        return nodes.KSampler().sample(model, seed, 4, 4.0, "euler", "simple", *conds, latent)[0]["samples"].float()

    error_without = relative_error(sample(fp8, (positive, negative)), sample(unquantized, (positive, negative)))
    expected = sample(unquantized, controlled)
    effect = relative_error(expected, sample(unquantized, (positive, negative)))
    growth = relative_error(sample(fp8, controlled), expected) - error_without
    assert effect > 0.1, "the ControlNet must change the image"
    assert growth <= CONTROLNET_ERROR_GROWTH, growth
