"""ComfyUI caches a node's outputs by its inputs: the checkpoint loader's CLIP and VAE must not
depend on which of its outputs a prompt connects. The README's own flow on a real server: save the
FP8 model first (only MODEL connected), then text to image with the same loader settings."""
import pytest

from devtools import tiny_sd3
from devtools.comfy_server import execution_error
from tests.e2e.t2i import assert_image, checkpoint_prompt, node

pytestmark = pytest.mark.e2e


def test_save_then_text_to_image_with_the_same_loader_settings(comfy, tiny_models):
    # a file of its own: no other test's prompt has cached this loader's outputs
    name = "cache_order.safetensors"
    tiny_sd3.write_checkpoint(comfy.base / "models" / "checkpoints" / name, seed=7)
    save_prompt = {
        "ckpt": node("SD35FP8CheckpointLoader", ckpt_name=name, policy="fp8_default", compute="auto"),
        "save": node("SD35FP8SaveCheckpoint", model=["ckpt", 0], folder="diffusion_models",
                     file_name="cache_order_fp8", granularity="per_channel", overwrite=False),
    }
    entry = comfy.run(save_prompt)
    assert execution_error(entry) is None, execution_error(entry)

    entry = comfy.run(checkpoint_prompt(name, prefix="cache_order"))

    assert execution_error(entry) is None, execution_error(entry)
    [image] = comfy.images(entry)
    assert_image(image, 64)
