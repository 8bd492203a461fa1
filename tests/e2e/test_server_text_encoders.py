"""Our text-encoder nodes on a real ComfyUI server: CLIP into stock CLIPTextEncodeSD3 and our FP8
model to an image, and the missing / wrong encoder errors as the UI shows them."""
import re

import pytest
from safetensors.torch import save_file

from devtools import tiny_sd3
from devtools.comfy_server import execution_error
from devtools.tiny_text_encoders import write_t5
from tests.e2e.t2i import assert_image, node, t2i_prompt

pytestmark = pytest.mark.e2e

T5_FILE = "tiny_t5xxl.safetensors"


@pytest.fixture(scope="module")
def t5_file(comfy, tiny_models):
    write_t5(comfy.base / "models" / "text_encoders" / T5_FILE)
    return T5_FILE


def sd3_prompt(tiny_models, text_encoders, seed=0, prefix="te"):
    """Model and VAE from our checkpoint loader (a file without text encoders), CLIP from
    `text_encoders` (one of our nodes), conditioning from stock CLIPTextEncodeSD3."""
    loaders = {"ckpt": node("SD35FP8CheckpointLoader", ckpt_name=tiny_models.large_no_te, policy="fp8_default",
                            compute="auto"),
               "te": text_encoders}
    prompt = t2i_prompt(loaders, ["ckpt", 0], ["te", 0], ["ckpt", 2], seed, prefix=prefix)
    for name, text in (("positive", "a red fox in the snow"), ("negative", "")):
        prompt[name] = node("CLIPTextEncodeSD3", clip=["te", 0], clip_l=text, clip_g=text, t5xxl=text,
                            empty_padding="none")
    return prompt


def text_encoders(clip_l="none", clip_g="none", t5xxl="none", t5_precision="as stored"):
    return node("SD35FP8TextEncoders", clip_l=clip_l, clip_g=clip_g, t5xxl=t5xxl, t5_precision=t5_precision)


@pytest.mark.parametrize("t5_precision", ["as stored", "fp8_e4m3fn"])
def test_text_encoders_to_clip_text_encode_sd3_to_fp8_model(comfy, tiny_models, t5_file, t5_precision):
    # All three encoders, the set SD3.5 is used with (two files would also go through ComfyUI's
    # T5-XXL detection, which on 0.33 wants the real 10240-wide feed-forward the narrow T5 lacks)
    te = text_encoders(tiny_models.clip_l, tiny_models.clip_g, t5_file, t5_precision)
    prompt = sd3_prompt(tiny_models, te, prefix=f"te_{t5_precision}")
    entry = comfy.run(prompt)
    assert execution_error(entry) is None, execution_error(entry)
    [image] = comfy.images(entry)
    assert_image(image, 64)


def write_vae(path):
    save_file(tiny_sd3.taesd_vae_state_dict(), str(path))


# (case, file to write into text_encoders or None, text-encoder node, patterns the message must contain)
BAD_CHOICES = [
    ("all_none", None, lambda m: text_encoders(), ["all 'none'", "models/text_encoders"]),
    ("vae_as_clip_g", ("vae_in_te.safetensors", write_vae),
     lambda m: text_encoders(m.clip_l, clip_g="vae_in_te.safetensors"),
     [r"clip_g: vae_in_te\.safetensors is a VAE, not a CLIP-G", "clip_g.safetensors", "models/text_encoders"]),
    ("t5_as_clip_l", None, lambda m: text_encoders(T5_FILE),
     [rf"clip_l: {T5_FILE} is a T5-XXL text encoder, not a CLIP-L: pick it in t5xxl"]),
    ("preset_missing_clip_g", None,
     lambda m: node("SD35FP8TextEncoderPreset", preset="no T5 (L+G)", clip_l=m.clip_l, clip_g="none", t5xxl="none"),
     ["needs a CLIP-G file but clip_g is 'none'", "models/text_encoders"]),
]


@pytest.mark.parametrize("case, file, make_node, patterns", BAD_CHOICES, ids=[c[0] for c in BAD_CHOICES])
def test_missing_or_wrong_encoder_fails_clearly_and_server_goes_on(comfy, tiny_models, t5_file, case, file, make_node,
                                                                   patterns):
    if file is not None:
        file_name, write = file
        write(comfy.base / "models" / "text_encoders" / file_name)
    entry = comfy.run(sd3_prompt(tiny_models, make_node(tiny_models), prefix=f"bad_{case}"))

    error = execution_error(entry)
    assert error is not None and error["node_id"] == "te", error
    for pattern in patterns:
        assert re.search(pattern, error["exception_message"]), f"{pattern!r} not in: {error['exception_message']}"

    seed = 2000 + [c[0] for c in BAD_CHOICES].index(case)
    entry = comfy.run(sd3_prompt(tiny_models, text_encoders(tiny_models.clip_l), seed=seed, prefix="after_bad_te"))
    assert execution_error(entry) is None
    [image] = comfy.images(entry)
    assert_image(image, 64)
