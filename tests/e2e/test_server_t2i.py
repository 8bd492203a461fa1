"""Text to image through a real ComfyUI server with our loaders, as a user's prompt would run."""
import pytest

from devtools.comfy_server import execution_error
from tests.e2e.t2i import POLICIES, assert_image, checkpoint_prompt, separate_files_prompt

pytestmark = pytest.mark.e2e

POLICY_COMPUTE = [(policy, "auto") for policy in POLICIES] + [("fp8_default", "weight_only")]


@pytest.mark.parametrize("policy, compute", POLICY_COMPUTE)
def test_checkpoint_t2i(comfy, tiny_models, policy, compute):
    prompt = checkpoint_prompt(tiny_models.large, policy, compute, prefix=f"t2i_large_{policy}_{compute}")
    entry = comfy.run(prompt)
    assert execution_error(entry) is None
    [image] = comfy.images(entry)
    assert_image(image, 64)


def test_medium_diffusion_model_with_stock_clip_and_vae_loaders(comfy, tiny_models):
    prompt = separate_files_prompt(tiny_models.medium, tiny_models.clip_l, tiny_models.vae,
                                   prefix="t2i_medium")
    entry = comfy.run(prompt)
    assert execution_error(entry) is None
    [image] = comfy.images(entry)
    assert_image(image, 64)
