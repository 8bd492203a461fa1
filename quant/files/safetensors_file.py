"""Safe reading of .safetensors files: header checks before any data is read, never a pickle.

The header is parsed here (not only by the safetensors library) so that a truncated or corrupt
file is reported with the file name and what is wrong, and so shapes are known without reading
tensor data.
"""
import json
import math
import os
import struct
from contextlib import ExitStack
from dataclasses import dataclass, field

import torch
from safetensors import safe_open

from ..errors import SD35FP8Error

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I64": 8,
               "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
_MAX_HEADER_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple
    nbytes: int


@dataclass(frozen=True)
class SafetensorsHeader:
    path: str  # the file, or the index JSON of a sharded model
    tensors: dict  # name -> TensorInfo
    metadata: dict
    shard_paths: dict = field(default_factory=dict)  # sharded models: name -> shard file

    def file_of(self, name):
        return self.shard_paths.get(name, self.path)

    @property
    def files(self):
        """Every file holding tensors, in order."""
        return tuple(dict.fromkeys(self.shard_paths.values())) or (self.path,)


def read_header(path) -> SafetensorsHeader:
    path = os.fspath(path)
    name = os.path.basename(path)
    if path.lower().endswith(PICKLE_SUFFIXES):
        raise SD35FP8Error(
            f"{name} is a pickle file: pickle files can run code when loaded, so this pack never "
            "opens them. Convert it to .safetensors (or download the .safetensors release) and "
            "pick that file instead.")
    if not os.path.isfile(path):
        raise SD35FP8Error(f"{name} was not found at {path}: check the path (a moved or renamed file, or a link to a "
                           "drive that is not mounted).")
    file_size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise SD35FP8Error(f"{name} is corrupt or truncated: {file_size} bytes, too short for a safetensors header. "
                               "The download or copy did not finish; get the file again.")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > min(_MAX_HEADER_BYTES, file_size - 8):
            raise SD35FP8Error(
                f"{name} is corrupt: not a safetensors file (its header length field reads "
                f"{header_len} bytes in a {file_size}-byte file). Download it again.")
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SD35FP8Error(f"{name} is corrupt: its safetensors header is not valid JSON ({e}). Download it again.") from None
    if not isinstance(header, dict):
        raise SD35FP8Error(f"{name} is corrupt: its safetensors header is not a JSON object. Download it again.")
    metadata = header.pop("__metadata__", None) or {}
    data_size = file_size - 8 - header_len
    tensors = {}
    needed = 0
    for key, entry in header.items():
        try:
            dtype, shape, (start, end) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
            expected = math.prod(shape) * DTYPE_BYTES[dtype]
        except (KeyError, TypeError, ValueError):
            raise SD35FP8Error(f"{name} is corrupt: the header entry for {key!r} is malformed. Download it again.") from None
        if end - start != expected:
            raise SD35FP8Error(f"{name} is corrupt: tensor {key!r} ({dtype} {list(shape)}) should take {expected} bytes, "
                               f"the header gives {end - start}. Download it again.")
        needed = max(needed, end)
        tensors[key] = TensorInfo(dtype, shape, expected)
    if needed > data_size:
        raise SD35FP8Error(
            f"{name} is truncated: its header describes {needed} bytes of tensor data but the file "
            f"holds {data_size}. The download or copy did not finish; get the file again.")
    return SafetensorsHeader(path, tensors, metadata)


# fp8 converts slowly on the CPU: its inf / NaN are the largest magnitudes as bits (e4m3fn:
# NaN is 0x7F without the sign; e5m2: 0x7C and up are inf and NaN).
_FP8_FIRST_NONFINITE = {torch.float8_e4m3fn: 0x7F, torch.float8_e5m2: 0x7C}


def _finite(tensor):
    if tensor.dtype in _FP8_FIRST_NONFINITE:
        return int((tensor.view(torch.uint8) & 0x7F).amax()) < _FP8_FIRST_NONFINITE[tensor.dtype]
    # amax propagates NaN and inf, and is several times faster than isfinite().all() on 16-bit floats
    return bool(torch.isfinite(tensor.abs().amax()))


def read_tensors(header: SafetensorsHeader, names, device="cpu", keep_open=True):
    """Yields (name, tensor) for `names`, one at a time, refusing NaN or inf values.

    keep_open=False opens the file again for every tensor: safetensors memory-maps the file and
    the pages read stay in the process's resident memory while it is open, so a streaming
    conversion of a 16 GB model would otherwise grow to the size of the file.
    """
    with ExitStack() as files:
        handles = {}
        for name in names:
            path = header.file_of(name)
            if path not in handles:
                handles[path] = files.enter_context(safe_open(path, framework="pt", device=str(device)))
            tensor = handles[path].get_tensor(name)
            if not keep_open:
                del handles[path]
                files.close()
            if tensor.is_floating_point() and tensor.numel() and not _finite(tensor):
                raise SD35FP8Error(
                    f"{os.path.basename(path)} has NaN or inf values in {name}: the file is damaged or was saved "
                    "from a diverged training run. Use another copy of the model.")
            yield name, tensor
