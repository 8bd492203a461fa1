"""Every SD3.5 file format through our loader nodes (in-process ComfyUI): FP8 layers taken as
stored, the rest quantized on load; bad files refused with nothing left in memory."""
import gc
import os
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

from devtools import tiny_sd3
from devtools.numerics import relative_error
from sd35_fp8.quant.quantized_weight import QuantizedWeight
from sd35_fp8.quant.scales import quantize_weight
from tests.fixtures import quantized_files
from tests.fixtures.quantized_files import read_model, same_bits
from tests.nodes.test_loaders import OUTPUT_ERROR_BOUND, load_diffusion_model, mmdit_output, random_inputs

PREFIX = tiny_sd3.MMDIT_PREFIX
# Files that hold every linear in FP8 (legacy scaled_fp8, quanto: the embedders and the final
# layer too, dequantized on load) carry more error than the policy's choice: measured 3.8-6.0%
# at the tiny MMDiT's output over 8 seeds, against 1.6-2.5% for the others.
EVERY_LINEAR_OUTPUT_BOUND = 0.08


def write_high_precision(dtype):
    def write(folder, state_dict):
        path = folder / f"{str(dtype).replace('torch.', '')}.safetensors"
        save_file({k: v.to(dtype) for k, v in state_dict.items()}, str(path))
        return path
    return write


# name: writer(folder, state_dict) -> the path written (a sharded model's index)
FORMATS = {
    "bf16": write_high_precision(torch.bfloat16),
    "fp16": write_high_precision(torch.float16),
    "fp32": write_high_precision(torch.float32),
    "comfy_quant_per_tensor": lambda f, sd: quantized_files.write_comfy_quant(f / "cq.safetensors", sd),
    "comfy_quant_per_channel": lambda f, sd: quantized_files.write_comfy_quant(f / "cqc.safetensors", sd, "per_channel"),
    "quantization_metadata": lambda f, sd: quantized_files.write_quantization_metadata(f / "qm.safetensors", sd, PREFIX),
    "scaled_fp8": lambda f, sd: quantized_files.write_scaled_fp8(f / "scaled.safetensors", sd, PREFIX),
    "quanto": lambda f, sd: quantized_files.write_quanto(f / "quanto", sd),
    "diffusers": lambda f, sd: quantized_files.write_diffusers(f / "diffusers", sd),
    "diffusers_sharded": lambda f, sd: quantized_files.write_diffusers(f / "sharded", sd, shards=2),
}


def pick(folder, written):
    """The name the loader's list shows for a written file (its first shard for a sharded model)."""
    return os.path.relpath(written, folder).replace("diffusion_pytorch_model.safetensors.index.json",
                                                    "diffusion_pytorch_model-00001-of-00002.safetensors")


@pytest.fixture(scope="module")
def source():
    return tiny_sd3.mmdit_state_dict("medium", prefix="", seed=int(torch.randint(0, 10**6, ())))


@pytest.mark.parametrize("fmt", FORMATS)
def test_format_loads_as_stored_or_quantized(pack, models_dir, source, fmt):
    folder = models_dir / "diffusion_models"
    name = pick(folder, FORMATS[fmt](folder, source))
    model = load_diffusion_model(pack, name)
    _, stored = read_model(folder / name)
    state = model.model.diffusion_model.state_dict()
    fp8 = [k for k, v in state.items() if v.dtype == torch.float8_e4m3fn]
    assert len(fp8) == 19
    for key in fp8:
        scale = state[key[: -len(".weight")] + ".weight_scale"]
        if isinstance(stored[key], QuantizedWeight):
            expected = stored[key]
        else:
            expected = QuantizedWeight(*quantize_weight(source[key].float() if fmt == "fp32" else stored[key]))
        assert same_bits(state[key], expected.weight) and torch.equal(scale, expected.scale), key
    reference = load_diffusion_model(pack, pick(folder, FORMATS["bf16"](folder, source)), "off")
    inputs = random_inputs()
    bound = EVERY_LINEAR_OUTPUT_BOUND if fmt in ("scaled_fp8", "quanto") else OUTPUT_ERROR_BOUND
    assert relative_error(mmdit_output(model, inputs), mmdit_output(reference, inputs)) < bound


def live_fp8_tensors():
    gc.collect()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor) and o.dtype == torch.float8_e4m3fn)


def truncated(folder, sd):
    path = quantized_files.write_comfy_quant(folder / "truncated.safetensors", sd)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    return path


def corrupt_header(folder, sd):
    path = quantized_files.write_comfy_quant(folder / "corrupt.safetensors", sd)
    data = bytearray(path.read_bytes())
    data[8:20] = b"#" * 12
    path.write_bytes(bytes(data))
    return path


def changed(name, key, value):
    def write(folder, sd):
        path = quantized_files.write_comfy_quant(folder / name, sd)
        tensors = load_file(str(path))
        tensors[key] = value
        save_file(tensors, str(path))
        return path
    return write


def missing_shard(folder, sd):
    index = quantized_files.write_diffusers(folder / "broken", sd, shards=2)
    os.remove(folder / "broken" / "diffusion_pytorch_model-00002-of-00002.safetensors")
    return index


LAST_LAYER = "joint_blocks.1.x_block.adaLN_modulation.1"
BAD_FILES = {
    "corrupt header": (corrupt_header, "corrupt.safetensors is corrupt: its safetensors header is not valid JSON"),
    "truncated data": (truncated, "truncated.safetensors is truncated"),
    "scale shape": (changed("shape.safetensors", LAST_LAYER + ".weight_scale", torch.ones(2, 2)),
                    "shape.safetensors is corrupt: the scale of .*adaLN_modulation.1.weight is F32 \\[2, 2\\]"),
    "unknown format": (changed("format.safetensors", LAST_LAYER + ".comfy_quant",
                               torch.tensor(list(b'{"format": "fp7"}'), dtype=torch.uint8)),
                       "format.safetensors: layer .*adaLN_modulation.1 has an unknown comfy_quant format 'fp7'"),
    "nan scale": (changed("nan.safetensors", LAST_LAYER + ".weight_scale", torch.tensor(float("nan"))),
                  "nan.safetensors has NaN or inf values in .*adaLN_modulation.1.weight_scale"),
    "inf scale": (changed("inf.safetensors", LAST_LAYER + ".weight_scale", torch.tensor(float("inf"))),
                  "inf.safetensors has NaN or inf values in .*adaLN_modulation.1.weight_scale"),
    "missing shard": (missing_shard, "diffusion_pytorch_model.safetensors.index.json names the shard "
                                     "diffusion_pytorch_model-00002-of-00002.safetensors, which is not in"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_file_is_refused_and_nothing_stays_loaded(pack, models_dir, source, case):
    write, message = BAD_FILES[case]
    folder = models_dir / "diffusion_models"
    name = pick(folder, write(folder, source))
    before = live_fp8_tensors()
    with pytest.raises(pack.quant.errors.SD35FP8Error, match=message) as error:
        load_diffusion_model(pack, name)
    # ComfyUI keeps the message of a failed node, not the exception and its frames
    del error
    assert live_fp8_tensors() == before
