"""Save node: a loaded SD3.5 FP8 model as one .safetensors file, quantized once and reused."""
import logging
import os

import folder_paths

from ..quant.errors import SD35FP8Error
from ..quant.files.formats.comfy_mixed import stored_tensors, write_fp8_file
from ..quant.layouts.sd35_layout import CHECKPOINT_MMDIT_PREFIX
from ..quant.quantized_weight import QuantizedWeight
from ..quant.scales import GRANULARITIES, PER_CHANNEL
from .loaders import CATEGORY
from .patched_tensors import model_tensors, patched_model_tensors

FOLDERS = ["diffusion_models", "checkpoints"]
GRANULARITY_INPUT = (list(GRANULARITIES), {"default": PER_CHANNEL, "tooltip":
                     "per_channel: the loaded FP8 weights bit for bit; only this pack reads the file. "
                     "per_tensor: each per-channel FP8 weight requantized to one scale per tensor (rounded a "
                     "second time: about 1.4x the weight error); stock ComfyUI's Load Diffusion Model and Load "
                     "Checkpoint read it too."})


def checked_file_name(file_name):
    """The name to write in the models folder; refuses anything that could leave it."""
    name = file_name.strip()
    if not name.lower().endswith(".safetensors"):
        name += ".safetensors"
    if ".." in name or os.path.isabs(name) or any(c in name for c in "/\\:\0") or name == ".safetensors":
        raise SD35FP8Error(f"File name {file_name!r} is not allowed: give a plain name such as "
                           "sd3.5_large_fp8.safetensors, without folders, '..' or a drive.")
    return name


def models_folder(folder):
    """Where to write: an existing folder of that kind, preferably the one named like it
    (diffusion_models also lists the older models/unet)."""
    existing = [p for p in folder_paths.get_folder_paths(folder) if os.path.isdir(p)]
    if not existing:
        raise SD35FP8Error(f"ComfyUI has no models/{folder} folder: create it, then run again.")
    return next((p for p in existing if os.path.basename(os.path.normpath(p)) == folder), existing[0])


class SD35FP8SaveCheckpoint:
    DESCRIPTION = (
        "Saves an SD3.5 MODEL from this pack's loaders as one .safetensors file, so the next load skips "
        "quantization: in models/diffusion_models (the MMDiT alone) or models/checkpoints (with the CLIP and "
        "VAE when connected). FP8 layers use ComfyUI's mixed-precision format (fp8 weight, fp32 weight_scale, "
        "comfy_quant), the rest is bf16; the metadata records the policy, each layer's decision, the scale "
        "granularity and the source file with its sha256. per_channel keeps the loaded weights bit for bit "
        "(this pack reads the file); per_tensor requantizes each per-channel FP8 weight to one scale per tensor "
        "(a second rounding: about 1.4x the weight error) and stock ComfyUI loads it too. LoRAs applied to the "
        "MODEL are baked in: each layer a LoRA changes is quantized to FP8 again, with the LoRA merged. "
        "The file is written under a temporary name and appears only when complete.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",),
                             "folder": (FOLDERS, {"tooltip": "diffusion_models: the MMDiT alone (load it with a "
                                                  "diffusion model loader); checkpoints: with CLIP and VAE"}),
                             "file_name": ("STRING", {"default": "sd3.5_fp8.safetensors"}),
                             "granularity": GRANULARITY_INPUT,
                             "overwrite": ("BOOLEAN", {"default": False})},
                "optional": {"clip": ("CLIP",), "vae": ("VAE",)}}

    def save(self, model, folder, file_name, granularity, overwrite, clip=None, vae=None):
        origin = getattr(model.model, "sd35_fp8_origin", None)
        if origin is None:
            raise SD35FP8Error("This MODEL does not come from Load SD3.5 Checkpoint (FP8) or Load SD3.5 Diffusion "
                               "Model (FP8): connect one of those loaders to the save node's model input.")
        if folder == "diffusion_models" and (clip is not None or vae is not None):
            raise SD35FP8Error("A diffusion_models file holds the MMDiT alone: choose the checkpoints folder to "
                               "save the CLIP and VAE with it, or disconnect them.")
        name = checked_file_name(file_name)
        path = os.path.join(models_folder(folder), name)
        # samefile: also through a symlink or hard link in the models folder
        if os.path.exists(path) and any(os.path.isfile(f) and os.path.samefile(path, f) for f in origin.files):
            raise SD35FP8Error(f"{name} in models/{folder} is the file this MODEL was loaded from: saving over it would "
                               "replace the original, with or without overwrite. Choose another file name.")
        if os.path.exists(path) and not overwrite:
            raise SD35FP8Error(f"{name} already exists in models/{folder}: choose another file name, or turn "
                               "overwrite on.")

        # As stock CheckpointSave: the MODEL's own weights, its patches (LoRA) applied, each patched one made
        # as it is written (a LoRA on every qkv and fc1 of SD3.5 Large patches about 3 GB of FP8 weights).
        plan = [(key, (value.weight if isinstance(value, QuantizedWeight) else value).shape,
                 isinstance(value, QuantizedWeight))
                for key, value in model_tensors(model.model.diffusion_model.state_dict())]
        mmdit = patched_model_tensors(model, model.model.diffusion_model, "diffusion_model.")
        others = {}
        if clip is not None:
            clip_tensors = {}
            # T5 in FP8 (the loaders' "T5 in FP8") has FP8 layers of ours
            for name, value in patched_model_tensors(clip.patcher, clip.cond_stage_model, ""):
                clip_tensors.update(stored_tensors(name, value, granularity))
            clip_tensors.update(clip.tokenizer.state_dict())
            others.update(model.model.model_config.process_clip_state_dict_for_saving(clip_tensors))
        if vae is not None:
            others.update(model.model.model_config.process_vae_state_dict_for_saving(vae.get_sd()))
        write_fp8_file(path, model_name=origin.model_name, policy=origin.policy,
                       layers=[(layer.name, layer.quantized, layer.reason) for layer in origin.report.layers],
                       source_files=origin.files, granularity=granularity,
                       prefix=CHECKPOINT_MMDIT_PREFIX if folder == "checkpoints" else "", overwrite=overwrite,
                       mmdit_plan=plan, mmdit_values=mmdit,
                       other_entries={key: (tensor.dtype, tuple(tensor.shape)) for key, tensor in others.items()},
                       other_values=others.items())
        logging.info("[sd35_fp8] saved %s (%s, %s scales, policy %s): %.2f GiB", path, origin.model_name,
                     granularity, origin.policy.name, os.path.getsize(path) / 1024 ** 3)
        return {"ui": {"text": [f"{folder}/{name}"]}}


NODE_CLASS_MAPPINGS = {"SD35FP8SaveCheckpoint": SD35FP8SaveCheckpoint}
NODE_DISPLAY_NAME_MAPPINGS = {"SD35FP8SaveCheckpoint": "Save SD3.5 Checkpoint (FP8)"}
