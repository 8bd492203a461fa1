"""Quantize once, reuse: our loader -> our save node on a real server, then the saved file in a
second prompt through stock ComfyUI's own UNETLoader (and through ours)."""
import pytest

from devtools.comfy_server import execution_error
from tests.e2e.t2i import assert_image, node, separate_files_prompt, t2i_prompt

pytestmark = pytest.mark.e2e


def test_saved_file_renders_with_the_stock_unet_loader(comfy, tiny_models):
    save_prompt = {
        "unet": node("SD35FP8DiffusionModelLoader", unet_name=tiny_models.medium, policy="fp8_default", compute="auto"),
        "save": node("SD35FP8SaveCheckpoint", model=["unet", 0], folder="diffusion_models", file_name="e2e_fp8",
                     granularity="per_tensor", overwrite=False),
    }
    entry = comfy.run(save_prompt)
    assert execution_error(entry) is None, execution_error(entry)
    assert entry["outputs"]["save"]["text"] == ["diffusion_models/e2e_fp8.safetensors"]
    saved = comfy.base / "models" / "diffusion_models" / "e2e_fp8.safetensors"
    assert saved.is_file() and not list(saved.parent.glob(".*.partial"))

    stock = {"unet": node("UNETLoader", unet_name="e2e_fp8.safetensors", weight_dtype="default"),
             "clip": node("CLIPLoader", clip_name=tiny_models.clip_l, type="sd3"),
             "vae": node("VAELoader", vae_name=tiny_models.vae)}
    entry = comfy.run(t2i_prompt(stock, ["unet", 0], ["clip", 0], ["vae", 0], prefix="saved_stock"))
    assert execution_error(entry) is None, execution_error(entry)
    [image] = comfy.images(entry)
    assert_image(image, 64)

    entry = comfy.run(separate_files_prompt("e2e_fp8.safetensors", tiny_models.clip_l, tiny_models.vae,
                                            prefix="saved_ours"))
    assert execution_error(entry) is None, execution_error(entry)
    [image] = comfy.images(entry)
    assert_image(image, 64)

    entry = comfy.run(save_prompt | {"save": node("SD35FP8SaveCheckpoint", model=["unet", 0], folder="diffusion_models",
                                                  file_name="e2e_fp8", granularity="per_channel", overwrite=False)})
    error = execution_error(entry)
    assert error is not None and "e2e_fp8.safetensors already exists" in error["exception_message"]
