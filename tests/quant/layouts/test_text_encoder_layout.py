import pytest

from devtools.tiny_text_encoders import NARROW_T5, T5XXL, t5_layout
from sd35_fp8.quant.errors import SD35FP8Error
from sd35_fp8.quant.files.safetensors_file import SafetensorsHeader, TensorInfo
from sd35_fp8.quant.layouts.text_encoder_layout import read_text_encoder

BYTES = {"F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1}


def header(shapes, dtype="F16", dtypes=None, name="file.safetensors"):
    """A header with these tensor shapes, as read_header returns it; no data needed."""
    tensors = {}
    for key, shape in shapes.items():
        key_dtype = (dtypes or {}).get(key, dtype)
        numel = 1
        for d in shape:
            numel *= d
        tensors[key] = TensorInfo(key_dtype, tuple(shape), numel * BYTES[key_dtype])
    return SafetensorsHeader(f"/models/text_encoders/{name}", tensors, {})


def clip_shapes(width, layers, openclip=False):
    if openclip:
        shapes = {f"transformer.resblocks.{i}.ln_1.weight": (width,) for i in range(layers)}
        return {**shapes, "token_embedding.weight": (49408, width)}
    shapes = {"text_model.embeddings.token_embedding.weight": (49408, width)}
    for i in range(layers):
        shapes[f"text_model.encoder.layers.{i}.layer_norm1.weight"] = (width,)
        shapes[f"text_model.encoder.layers.{i}.mlp.fc1.weight"] = (4 * width, width)
    return shapes


def in_checkpoint_names(encoder, shapes):
    return {f"text_encoders.{encoder}.transformer.{k}": v for k, v in shapes.items()}


def t5_shapes(config=NARROW_T5, prefix=""):
    return {prefix + name: shape for name, (shape, _) in t5_layout(config).items()}


@pytest.mark.parametrize("slot, shapes", [("clip_l", clip_shapes(768, 12)), ("clip_g", clip_shapes(1280, 32)),
                                          ("clip_g", clip_shapes(1280, 32, openclip=True)), ("t5xxl", t5_shapes())])
def test_recognizes_each_encoder(slot, shapes):
    found = read_text_encoder(header(shapes), slot)
    assert found.encoder == slot and found.storage == "fp16" and not found.fp8


def test_t5_widths_come_from_the_file():
    assert read_text_encoder(header(t5_shapes(T5XXL)), "t5xxl").t5_config == T5XXL
    assert read_text_encoder(header(t5_shapes()), "t5xxl").t5_config == NARROW_T5


def test_checkpoint_prefix():
    shapes = {**t5_shapes(prefix="text_encoders.t5xxl.transformer."),
              **{"text_encoders.clip_l.transformer." + k: v for k, v in clip_shapes(768, 12).items()},
              "model.diffusion_model.x_embedder.proj.weight": (128, 16, 2, 2)}
    assert read_text_encoder(header(shapes), "t5xxl", "text_encoders.t5xxl.transformer.").encoder == "t5xxl"
    assert read_text_encoder(header(shapes), "clip_l", "text_encoders.clip_l.transformer.").encoder == "clip_l"


def test_fp8_storage_is_the_layers_dtype():
    shapes = {**t5_shapes(), "scaled_fp8": (0,)}
    linears = {k: "F8_E4M3" for k, v in shapes.items() if k.startswith("encoder.block.") and len(v) == 2}
    found = read_text_encoder(header(shapes, dtypes={**linears, "scaled_fp8": "F8_E4M3"}), "t5xxl")
    # the narrow T5's fp16 embeddings hold more parameters than its fp8 linears
    assert found.fp8 and found.storage == "fp8_e4m3fn" and found.scaled_fp8


def not_gated(shapes):
    return {k.replace("wi_0", "wi"): v for k, v in shapes.items() if "wi_1" not in k}


WRONG = [
    ("clip_l", clip_shapes(1280, 32), "is a CLIP-G text encoder, not a CLIP-L: pick it in clip_g"),
    ("t5xxl", clip_shapes(768, 12), "is a CLIP-L text encoder, not a T5-XXL: pick it in clip_l"),
    ("clip_g", clip_shapes(1024, 24), "is a CLIP-H text encoder (SD 2.x), not a CLIP-G"),
    ("clip_l", clip_shapes(768, 6), "is a CLIP text encoder 768 wide with 6 layers, where SD3.5's CLIP-L is 768 wide "
     "with 12 layers, not a CLIP-L"),
    ("clip_l", in_checkpoint_names("clip_l", clip_shapes(512, 12)), "is a CLIP-L with unexpected shapes (a CLIP text "
     "encoder 512 wide with 12 layers, where SD3.5's CLIP-L is 768 wide with 12 layers), stored under the key names of "
     "an SD3 checkpoint (text_encoders.clip_l.transformer.*)"),
    ("clip_l", in_checkpoint_names("clip_l", clip_shapes(768, 12)), "is a CLIP-L, stored under the key names of an SD3 "
     "checkpoint (text_encoders.clip_l.transformer.*), which text-encoder loaders do not read"),
    ("clip_g", {**in_checkpoint_names("clip_l", clip_shapes(768, 12)), **in_checkpoint_names("clip_g", clip_shapes(1280, 32))},
     "is the text encoders of an SD3 checkpoint (CLIP-G, CLIP-L) without its MMDiT"),
    ("t5xxl", t5_shapes({**NARROW_T5, "vocab_size": 256384}), "is a UMT5 or mT5 text encoder"),
    ("t5xxl", t5_shapes({**NARROW_T5, "d_model": 2048}), "is a T5-XL text encoder"),
    ("t5xxl", t5_shapes({**NARROW_T5, "num_layers": 12}),
     "is a T5 text encoder 4096 wide with 12 blocks, where SD3.5's T5-XXL is 4096 wide with 24 blocks"),
    ("t5xxl", not_gated(t5_shapes()), "is a T5-XXL v1.0 text encoder"),
    ("clip_l", t5_shapes(), "is a T5-XXL text encoder, not a CLIP-L: pick it in t5xxl"),
    ("clip_l", {"lora_unet_joint_blocks_0_x_block_attn_qkv.lora_up.weight": (64, 4)}, "is a LoRA"),
    ("t5xxl", {"model.layers.0.self_attn.q_proj.weight": (64, 64)}, "is a language model"),
    ("clip_g", {"decoder.conv_in.weight": (512, 16, 3, 3)}, "is a VAE"),
    ("clip_l", {"joint_blocks.0.x_block.attn.qkv.weight": (384, 128)}, "is an SD3 / SD3.5 checkpoint"),
    ("clip_l", {"something.weight": (3, 3)}, "is not a CLIP or T5 text encoder (1 tensors such as 'something.weight')"),
]


@pytest.mark.parametrize("slot, shapes, found", WRONG, ids=[case[2][:30] for case in WRONG])
def test_wrong_files_say_what_they_are_and_what_is_needed(slot, shapes, found):
    with pytest.raises(SD35FP8Error) as error:
        read_text_encoder(header(shapes, name="chosen.safetensors"), slot)
    message = str(error.value)
    assert message.startswith(f"{slot}: chosen.safetensors ") and found in message, message
    if "pick it in" not in message:
        assert "clip_l.safetensors" in message and "clip_g.safetensors" in message and "models/text_encoders" in message
