"""Streams a file's MMDiT as ComfyUI names it: (name, tensor or QuantizedWeight), one at a time.

The plan (from sd35_layout.read_contents) says, for every tensor of ComfyUI's MMDiT, which stored
tensors make it and how: one tensor as is, diffusers' separate q, k, v stacked into one qkv, or
diffusers' (scale, shift) halves swapped into ComfyUI's (shift, scale). FP8 weights stay FP8.
"""
from dataclasses import dataclass

import torch

from ...quantized_weight import QuantizedWeight, concatenate
from ..safetensors_file import read_tensors


@dataclass(frozen=True)
class PlanEntry:
    name: str  # inside ComfyUI's MMDiT: "joint_blocks.0.x_block.attn.qkv.weight"
    shape: tuple
    sources: tuple  # stored_layers.Stored, in order
    combine: str = "copy"  # "copy", "concat" or "swap_halves"


def _concat(values):
    if all(isinstance(v, QuantizedWeight) for v in values):
        return concatenate(values)
    if any(isinstance(v, QuantizedWeight) for v in values):
        values = [v.dequantize(torch.float32) if isinstance(v, QuantizedWeight) else v.float() for v in values]
    return torch.cat(values)


def _swap_halves(values):
    (value,) = values
    if not isinstance(value, QuantizedWeight):
        return torch.cat(value.chunk(2)[::-1])
    scale = value.scale if value.scale.ndim == 0 else torch.cat(value.scale.chunk(2)[::-1])
    return QuantizedWeight(torch.cat(value.weight.chunk(2)[::-1]), scale)


COMBINE = {"copy": lambda values: values[0], "concat": _concat, "swap_halves": _swap_halves}


def _stored_value(stored, tensors):
    _, tensor = next(tensors)
    if not stored.fp8:
        return tensor
    scale = next(tensors)[1] if stored.scale_key is not None else torch.ones(())
    return QuantizedWeight.from_stored(tensor, scale)


def read_mmdit(header, contents, keep_open=True):
    """Yields (name, tensor or QuantizedWeight) in plan order; see read_tensors for keep_open."""
    keys = [key for entry in contents.mmdit_plan for stored in entry.sources
            for key in (stored.key, stored.scale_key) if key is not None]
    tensors = read_tensors(header, keys, keep_open=keep_open)
    for entry in contents.mmdit_plan:
        yield entry.name, COMBINE[entry.combine]([_stored_value(stored, tensors) for stored in entry.sources])
