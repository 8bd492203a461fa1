"""The loader makes the image tokens contiguous after the patch embedding (nodes/token_layout.py), inside
the real ComfyUI (in-process): every block then sees a contiguous image stream, and the model computes
what it computed with ComfyUI's transposed view."""
import pytest
import torch

from devtools.tiny_sd3 import write_diffusion_model
from tests.nodes.test_loaders import load_diffusion_model, mmdit_output, random_inputs


@pytest.mark.parametrize("variant", ["large", "medium"])
def test_every_block_sees_contiguous_image_tokens_and_the_output_stays(pack, models_dir, variant, monkeypatch):
    import comfy.ldm.modules.diffusionmodules.mmdit as mmdit
    from sd35_fp8.nodes.token_layout import ContiguousTokens
    write_diffusion_model(models_dir / "diffusion_models" / f"{variant}.safetensors", variant=variant,
                          seed=int(torch.randint(0, 10**6, ())))
    model = load_diffusion_model(pack, f"{variant}.safetensors")
    diffusion_model = model.model.diffusion_model
    assert isinstance(diffusion_model.x_embedder.norm, ContiguousTokens)
    state = {k: v.clone() for k, v in diffusion_model.state_dict().items()}
    seen = []
    original = mmdit.DismantledBlock.post_attention if variant == "large" else mmdit.DismantledBlock.post_attention_x
    name = original.__name__

    def recording(self, attn, *args, **kwargs):
        seen.append(args[-5 if name == "post_attention" else -6].is_contiguous())  # the stream's x
        return original(self, attn, *args, **kwargs)
    monkeypatch.setattr(mmdit.DismantledBlock, name, recording)
    inputs = random_inputs()
    contiguous = mmdit_output(model, inputs)
    assert seen and all(seen)
    diffusion_model.x_embedder.norm = torch.nn.Identity()  # ComfyUI's patch embedding
    seen.clear()
    transposed = mmdit_output(model, inputs)
    assert not all(seen)
    torch.testing.assert_close(contiguous, transposed, rtol=0, atol=0)
    assert all(torch.equal(v.view(torch.uint8), state[k].view(torch.uint8)) for k, v in diffusion_model.state_dict().items())
