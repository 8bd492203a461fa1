"""Offline conversion, without ComfyUI: any SD3.5 file this pack reads -> this pack's FP8 file.

Streams tensor by tensor (each read with its own file mapping, written at its place in the
output), so memory stays near one tensor whatever the model's size. Runs exactly the steps of
loading then saving in ComfyUI (quantize per channel as the loader does, then the save node's
file layout), so both give the same bytes for the same input, policy and granularity.
"""
from dataclasses import replace

from .formats.comfy_mixed import HIGH_PRECISION_DTYPE, file_metadata, file_tensors, tensor_entries
from .formats.mmdit_reader import read_mmdit
from .formats.model_files import read_model_header
from .quantize import decide, quantize_tensor
from .quantized_weight import QuantizedWeight
from .report import QuantReport
from .safetensors_file import read_tensors
from .safetensors_writer import TORCH_DTYPES, SafetensorsWriter
from .sd35_layout import CHECKPOINT_MMDIT_PREFIX, read_contents


def convert(source, target, policy, granularity="per_channel", overwrite=False):
    """Writes `target`; returns the QuantReport. A source with text encoders or a VAE gives a
    checkpoint (models/checkpoints) with them copied as they are; an MMDiT alone gives a
    diffusion model (models/diffusion_models)."""
    header = read_model_header(source)
    contents = read_contents(header)
    other_keys = [k for keys in contents.text_encoder_keys.values() for k in keys] + list(contents.vae_keys)
    prefix = CHECKPOINT_MMDIT_PREFIX if other_keys else ""
    entries, layers = {}, []
    for entry in contents.mmdit_plan:
        decision = decide(entry.name, len(entry.shape), policy, all(s.fp8 for s in entry.sources))
        fp8 = decision is not None and decision.quantize
        entries.update(tensor_entries(entry.name, entry.shape, fp8, granularity, prefix))
        if decision is not None:
            layers.append((decision.name, decision.quantize, decision.reason))
    entries.update({k: (TORCH_DTYPES[header.tensors[k].dtype], header.tensors[k].shape) for k in other_keys})
    metadata = file_metadata(contents.mmdit.model_name, policy, granularity, layers, header.files)

    reports, other_bytes = [], 0
    with SafetensorsWriter(target, entries, metadata, overwrite) as writer:
        for name, source_value in read_mmdit(header, contents, keep_open=False):
            value, report = quantize_tensor(name, source_value, policy, "per_channel", HIGH_PRECISION_DTYPE)
            if isinstance(value, QuantizedWeight) and granularity == "per_tensor":
                value = value.per_tensor()
                if report.weight_rel_error:  # None for weights stored in fp8 already
                    # what the file holds: requantized to one scale, as the save node must
                    report = replace(report, weight_rel_error=value.relative_error(source_value))
            for key, tensor in file_tensors(name, value, granularity, prefix):
                writer.write(key, tensor)
            if report is not None:
                reports.append(report)
            else:
                other_bytes += value.numel() * value.element_size()
        for key, tensor in read_tensors(header, other_keys, keep_open=False):
            writer.write(key, tensor)
    return QuantReport(policy.name, granularity, tuple(reports), other_bytes)
