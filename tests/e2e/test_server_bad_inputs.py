"""Files users really put in their model folders: each fails with a message naming the file and
the problem, in /history as the UI shows it, and the server goes on running prompts."""
import re

import pytest
import torch
from safetensors.torch import save_file

from devtools import tiny_sd3
from devtools.comfy_server import execution_error
from tests.e2e.t2i import assert_image, checkpoint_prompt, separate_files_prompt, stock_clip_prompt

pytestmark = pytest.mark.e2e


def write_pickle(path):
    torch.save(tiny_sd3.mmdit_state_dict(depth=1, pos_embed_max_size=4), path)


def write_dangling_link(path):
    # listed by ComfyUI (so the prompt passes validation) but gone when the loader opens it,
    # as a model linked from an unmounted drive
    path.symlink_to(path.with_name("moved_away.safetensors"))


def write_truncated(path):
    tiny_sd3.write_checkpoint(path, clip_l=False)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def write_garbage(path):
    path.write_bytes(b"this is not a safetensors file\n" * 100)


def write_nan_weight(path):
    state_dict = tiny_sd3.mmdit_state_dict()
    state_dict["model.diffusion_model.joint_blocks.1.x_block.mlp.fc1.weight"][3, 5] = float("nan")
    state_dict.update(tiny_sd3.taesd_vae_state_dict())
    save_file(state_dict, path)


def write_without_final_layer(path):
    # ComfyUI alone logs "unet missing" and samples black images
    save_file({k: v for k, v in tiny_sd3.mmdit_state_dict(prefix="").items() if not k.startswith("final_layer.linear.")},
              str(path))


# (file name, model folder, writer, patterns the error message must contain besides the file name)
BAD_FILES = [
    ("pickled.ckpt", "checkpoints", write_pickle, ["pickle"]),
    ("dangling.safetensors", "checkpoints", write_dangling_link, ["not found"]),
    ("truncated.safetensors", "checkpoints", write_truncated, ["corrupt|truncated"]),
    ("garbage.safetensors", "checkpoints", write_garbage, ["corrupt|truncated"]),
    ("sdxl_like.safetensors", "checkpoints", tiny_sd3.write_sdxl_like, ["not an SD3", "SDXL"]),
    ("flux_like.safetensors", "diffusion_models", tiny_sd3.write_flux_like, ["not an SD3", "Flux"]),
    ("nan_weight.safetensors", "checkpoints", write_nan_weight, ["NaN or inf"]),
    ("empty.safetensors", "checkpoints", lambda path: path.write_bytes(b""), ["0 bytes", "get the file again"]),
    ("no_final_layer.safetensors", "diffusion_models", write_without_final_layer,
     ["lacks 2 tensors", "final_layer.linear.weight", "download it again"]),
]


@pytest.mark.parametrize("file_name, folder, write, patterns", BAD_FILES, ids=[case[0] for case in BAD_FILES])
def test_bad_file_fails_clearly_and_server_goes_on(comfy, tiny_models, file_name, folder, write, patterns):
    write(comfy.base / "models" / folder / file_name)
    if folder == "diffusion_models":
        prompt, loader = separate_files_prompt(file_name, tiny_models.clip_l, tiny_models.vae), "unet"
    else:
        prompt, loader = stock_clip_prompt(file_name, tiny_models.clip_l), "ckpt"

    entry = comfy.run(prompt)

    error = execution_error(entry)
    assert error is not None, f"{file_name} loaded without an error"
    assert error["node_id"] == loader, error
    message = error["exception_message"]
    assert file_name in message, message
    for pattern in patterns:
        assert re.search(pattern, message, re.IGNORECASE), f"{pattern!r} not in: {message}"

    seed = 1000 + [case[0] for case in BAD_FILES].index(file_name)
    entry = comfy.run(checkpoint_prompt(tiny_models.large, seed=seed, prefix="after_bad_file"))
    assert execution_error(entry) is None
    [image] = comfy.images(entry)
    assert_image(image, 64)


# (file name, parts the checkpoint has, the node that uses the missing one, patterns in the message)
MISSING_PARTS = [
    ("no_te_clip_connected.safetensors", dict(clip_l=False), "CLIPTextEncode", ["no text encoders", "CLIPLoader"]),
    ("no_vae_connected.safetensors", dict(vae=False), "VAEDecode", ["no VAE", "Load VAE"]),
]


@pytest.mark.parametrize("file_name, parts, user, patterns", MISSING_PARTS, ids=[case[0] for case in MISSING_PARTS])
def test_missing_part_fails_where_it_is_used(comfy, file_name, parts, user, patterns):
    tiny_sd3.write_checkpoint(comfy.base / "models" / "checkpoints" / file_name, **parts)

    entry = comfy.run(checkpoint_prompt(file_name))

    error = execution_error(entry)
    assert error is not None and error["node_type"] == user, error
    message = error["exception_message"]
    assert file_name in message, message
    for pattern in patterns:
        assert re.search(pattern, message, re.IGNORECASE), f"{pattern!r} not in: {message}"


def test_checkpoint_without_text_encoders_runs_with_stock_clip_loader(comfy, tiny_models):
    prompt = stock_clip_prompt(tiny_models.large_no_te, tiny_models.clip_l, prefix="no_te_stock_clip")
    entry = comfy.run(prompt)
    assert execution_error(entry) is None
    [image] = comfy.images(entry)
    assert_image(image, 64)


def test_unlisted_file_is_rejected_before_running(comfy):
    reply = comfy.queue(checkpoint_prompt("never_there.safetensors"))
    assert "prompt_id" not in reply
    assert "never_there.safetensors" in str(reply["node_errors"]["ckpt"])
