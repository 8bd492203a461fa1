"""Builds ComfyUI's own MODEL, CLIP and VAE objects from a checked safetensors file."""
import logging
import os

import comfy.model_management
import comfy.sd
import comfy.supported_models
import comfy.utils
import folder_paths

from ..quant.errors import SD35FP8Error
from ..quant.quantize import quantize_state_dict
from ..quant.safetensors_file import read_header, read_tensors
from ..quant.sd35_layout import TEXT_ENCODER_PREFIXES, VAE_PREFIX, read_contents
from .ops import FP8Ops


def resolve_model_file(folder, file_name):
    path = folder_paths.get_full_path(folder, file_name)
    if path is None:
        raise SD35FP8Error(f"{file_name} was not found in models/{folder}: put the file there and refresh the node list (press r).")
    return path


def open_sd35_file(path):
    header = read_header(path)
    return header, read_contents(header)


def _strip(prefix, named_tensors):
    return ((name[len(prefix):], tensor) for name, tensor in named_tensors)


def load_mmdit(header, contents, policy):
    """Quantizes while reading, tensor by tensor, and returns (ModelPatcher, QuantReport)."""
    parameters = sum(_numel(header.tensors[k].shape) for k in contents.mmdit_keys)
    compute_dtype = comfy.model_management.unet_dtype(
        model_params=parameters, supported_dtypes=comfy.supported_models.SD3.supported_inference_dtypes)
    progress = comfy.utils.ProgressBar(len(contents.mmdit_keys))
    state_dict, report = quantize_state_dict(
        _strip(contents.mmdit_prefix, read_tensors(header, contents.mmdit_keys)), policy,
        compute_dtype=compute_dtype, device=comfy.model_management.get_torch_device(),
        on_tensor=lambda: progress.update(1))
    model = comfy.sd.load_diffusion_model_state_dict(
        state_dict, model_options={"custom_operations": FP8Ops, "dtype": compute_dtype})
    if model is None:
        raise SD35FP8Error(f"{os.path.basename(header.path)}: ComfyUI could not build an SD3 model from its MMDiT weights.")
    logging.info("[sd35_fp8] %s: %s; compute dtype %s", os.path.basename(header.path),
                 report.summary(contents.mmdit.model_name), str(compute_dtype).replace("torch.", ""))
    return model, report


def load_text_encoders(header, contents):
    state_dicts = [dict(_strip(TEXT_ENCODER_PREFIXES[te], read_tensors(header, contents.text_encoder_keys[te])))
                   for te in contents.text_encoders]
    return comfy.sd.load_text_encoder_state_dicts(
        state_dicts, embedding_directory=folder_paths.get_folder_paths("embeddings"),
        clip_type=comfy.sd.CLIPType.SD3)


def load_vae(header, contents):
    return comfy.sd.VAE(sd=dict(_strip(VAE_PREFIX, read_tensors(header, contents.vae_keys))))


def _numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n
