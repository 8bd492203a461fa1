"""Text-encoder nodes for SD3.5: CLIP-L, CLIP-G and T5-XXL files in any combination with T5's
precision, or a memory preset by name. Both return ComfyUI's own CLIP, for the stock
CLIPTextEncode and CLIPTextEncodeSD3 nodes."""
import folder_paths

from ..quant.errors import SD35FP8Error
from ..quant.layouts.text_encoder_layout import ENCODER_NAMES, NEEDED_FILES
from .loaders import CATEGORY
from .text_encoder_loading import T5_PRECISIONS, build_sd3_clip, file_source

NONE = "none"
PRESETS = {  # name -> (encoders loaded, T5 precision)
    "full (L+G+T5)": (("clip_l", "clip_g", "t5xxl"), "as stored"),
    "no T5 (L+G)": (("clip_l", "clip_g"), "as stored"),
    "T5 in FP8": (("clip_l", "clip_g", "t5xxl"), "fp8_e4m3fn"),
}
FILE_TOOLTIPS = {
    "clip_l": "CLIP-L (clip_l.safetensors) from models/text_encoders.",
    "clip_g": "CLIP-G (clip_g.safetensors) from models/text_encoders.",
    "t5xxl": "T5-XXL (t5xxl_fp16.safetensors, or an fp8 / fp8_scaled file, which loads as it is) from "
             "models/text_encoders.",
}
T5_PRECISION_TOOLTIP = (
    "as stored: T5 as the file holds it (ComfyUI's default; fp32 files load as fp16). fp8_e4m3fn: "
    "quantized on load with one scale per output channel, about half of fp16's memory; token embeddings, "
    "layer norms and the relative-position bias stay 16-bit. fp16 / bf16: cast on load. A T5 file already "
    "in FP8 always loads as it is.")


def _file_inputs():
    files = [NONE] + folder_paths.get_filename_list("text_encoders")
    return {slot: (files, {"tooltip": tooltip}) for slot, tooltip in FILE_TOOLTIPS.items()}


def _load(chosen, t5_precision):
    return (build_sd3_clip([file_source(slot, file_name) for slot, file_name in chosen.items()], t5_precision),)


class SD35FP8TextEncoders:
    DESCRIPTION = ("Loads SD3.5's text encoders from models/text_encoders in any combination ('none' leaves "
                   "one out; a missing encoder contributes zeros, as in stock ComfyUI) and T5-XXL in the "
                   "precision you choose. Connect the CLIP to CLIPTextEncode or CLIPTextEncodeSD3.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {**_file_inputs(), "t5_precision": (list(T5_PRECISIONS), {"default": "as stored",
                                                                                      "tooltip": T5_PRECISION_TOOLTIP})}}

    def load(self, clip_l, clip_g, t5xxl, t5_precision="as stored"):
        chosen = {slot: name for slot, name in (("clip_l", clip_l), ("clip_g", clip_g), ("t5xxl", t5xxl)) if name != NONE}
        if not chosen:
            raise SD35FP8Error(f"No text encoder chosen: clip_l, clip_g and t5xxl are all 'none'. {NEEDED_FILES}; "
                               "pick them here (press r to refresh the lists after adding files).")
        return _load(chosen, t5_precision)


class SD35FP8TextEncoderPreset:
    DESCRIPTION = ("SD3.5's text encoders by memory level: 'full (L+G+T5)' as the files hold them, 'no T5 "
                   "(L+G)' without T5-XXL (the T5 file is not read), 'T5 in FP8' with T5-XXL quantized to FP8 "
                   "on load. The file choices say which file is each encoder.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"preset": (list(PRESETS), {"tooltip": cls.DESCRIPTION}), **_file_inputs()}}

    def load(self, preset, clip_l, clip_g, t5xxl):
        encoders, t5_precision = PRESETS[preset]
        files = {"clip_l": clip_l, "clip_g": clip_g, "t5xxl": t5xxl}
        for slot in encoders:
            if files[slot] == NONE:
                other = "or choose preset 'no T5 (L+G)'" if slot == "t5xxl" else "or use SD3.5 Text Encoders (FP8) to leave it out"
                raise SD35FP8Error(f"Preset '{preset}' needs a {ENCODER_NAMES[slot]} file but {slot} is 'none': "
                                   f"put one in models/text_encoders and pick it in {slot}, {other}.")
        return _load({slot: files[slot] for slot in encoders}, t5_precision)


NODE_CLASS_MAPPINGS = {
    "SD35FP8TextEncoders": SD35FP8TextEncoders,
    "SD35FP8TextEncoderPreset": SD35FP8TextEncoderPreset,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "SD35FP8TextEncoders": "SD3.5 Text Encoders (FP8)",
    "SD35FP8TextEncoderPreset": "SD3.5 Text Encoder Preset (FP8)",
}
