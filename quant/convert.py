"""Offline conversion, without ComfyUI: any SD3.5 file this pack reads -> this pack's FP8 file.

Streams tensor by tensor (each read with its own file mapping, written at its place in the
output), so memory stays near one tensor whatever the model's size. Runs exactly the steps of
loading then saving in ComfyUI (quantize per channel as the loader does, then the save node's
file layout), so both give the same bytes for the same input, policy and granularity.
"""
import os
from dataclasses import replace

from .errors import SD35FP8Error
from .files.formats.comfy_mixed import HIGH_PRECISION_DTYPE, write_fp8_file
from .files.formats.mmdit_reader import read_mmdit
from .files.formats.model_files import read_model_header
from .files.safetensors_file import read_tensors
from .files.safetensors_writer import TORCH_DTYPES
from .layouts.sd35_layout import CHECKPOINT_MMDIT_PREFIX, read_contents
from .quantize import decide, quantize_tensor
from .quantized_weight import QuantizedWeight
from .reports.report import QuantReport
from .scales import PER_CHANNEL, PER_TENSOR


def _check_target(header, target, overwrite):
    """Refuses, before any work, an output that would destroy the source (whatever `overwrite`
    says), one no loader would open, or one that cannot be written. Messages speak to the command
    line's user (quant/__main__.py)."""
    name = os.path.basename(target)
    if not name.lower().endswith(".safetensors"):
        raise SD35FP8Error(f"{name}: the output must be a .safetensors file (ComfyUI and this pack take .ckpt, .pt "
                           "and .bin files for pickles): name it like sd3.5_large_fp8.safetensors.")
    folder = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(folder):
        raise SD35FP8Error(f"The output folder {folder} does not exist: create it, or give an output path in an "
                           "existing folder.")
    if not os.path.exists(target):
        return
    # samefile compares device and inode: the same file through a symlink or a hard link too
    if any(os.path.samefile(target, path) for path in header.files):
        raise SD35FP8Error(f"{target} is the file being converted (or a link to it): writing the output there would "
                           "destroy the original, with or without --overwrite. Give another output file.")
    if not overwrite:
        raise SD35FP8Error(f"{target} already exists: give another output file, or add --overwrite to replace it.")


def convert(source, target, policy, granularity=PER_CHANNEL, overwrite=False):
    """Writes `target`; returns the QuantReport. A source with text encoders or a VAE gives a
    checkpoint (models/checkpoints) with them copied as they are; an MMDiT alone gives a
    diffusion model (models/diffusion_models)."""
    target = os.fspath(target)
    header = read_model_header(source)
    _check_target(header, target, overwrite)
    contents = read_contents(header)
    other_keys = [k for keys in contents.text_encoder_keys.values() for k in keys] + list(contents.vae_keys)
    plan, layers = [], []
    for entry in contents.mmdit_plan:
        decision = decide(entry.name, len(entry.shape), policy, all(s.fp8 for s in entry.sources))
        plan.append((entry.name, entry.shape, decision is not None and decision.quantize))
        if decision is not None:
            layers.append((decision.name, decision.quantize, decision.reason))
    reports, other_bytes = [], 0

    def mmdit_values():
        nonlocal other_bytes
        for name, source_value in read_mmdit(header, contents, keep_open=False):
            value, report = quantize_tensor(name, source_value, policy, PER_CHANNEL, HIGH_PRECISION_DTYPE)
            if isinstance(value, QuantizedWeight) and granularity == PER_TENSOR:
                value = value.per_tensor()
                if report.weight_rel_error:  # None for weights stored in fp8 already
                    # what the file holds: requantized to one scale, as the save node must
                    report = replace(report, weight_rel_error=value.relative_error(source_value))
            if report is not None:
                reports.append(report)
            else:
                other_bytes += value.numel() * value.element_size()
            yield name, value

    write_fp8_file(target, model_name=contents.mmdit.model_name, policy=policy, layers=layers,
                   source_files=header.files, granularity=granularity,
                   prefix=CHECKPOINT_MMDIT_PREFIX if other_keys else "", overwrite=overwrite,
                   mmdit_plan=plan, mmdit_values=mmdit_values(),
                   other_entries={k: (TORCH_DTYPES[header.tensors[k].dtype], header.tensors[k].shape) for k in other_keys},
                   other_values=read_tensors(header, other_keys, keep_open=False))
    return QuantReport(policy.name, granularity, tuple(reports), other_bytes)
