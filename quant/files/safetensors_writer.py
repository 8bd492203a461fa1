"""Writes a .safetensors file tensor by tensor, without holding the model in memory.

safetensors' own save_file needs every tensor at once. Here the header is computed from names,
dtypes and shapes first; each tensor is then written at its offset as it is produced, in any
order. The layout is safetensors' own (tensors sorted by dtype, largest first, then name; header
padded to 8 bytes), so the bytes equal save_file's for the same tensors; metadata keys are
sorted here (save_file writes them in its hash map's order), so the same input gives the same
bytes every time.

The file is written under a temporary name in the target folder and renamed only once complete;
on any failure the temporary file is removed and the target is untouched.
"""
import errno
import json
import math
import os
import struct
import uuid

import torch

from ..errors import SD35FP8Error

# safetensors' order (its Dtype enum, largest first): keeps every tensor aligned to its size.
DTYPE_NAMES = {torch.int64: "I64", torch.float64: "F64", torch.float32: "F32", torch.int32: "I32",
               torch.bfloat16: "BF16", torch.float16: "F16", torch.int16: "I16",
               torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2", torch.int8: "I8",
               torch.uint8: "U8", torch.bool: "BOOL"}
_ORDER = {dtype: i for i, dtype in enumerate(DTYPE_NAMES)}
TORCH_DTYPES = {name: dtype for dtype, name in DTYPE_NAMES.items()}
# The longest file name Linux, macOS and Windows take, in bytes of UTF-8 (NTFS counts 255 UTF-16
# units, never more than the UTF-8 bytes).
NAME_MAX_BYTES = 255
_PERMISSIONS = "check that ComfyUI (or the user running this) has permission to write to the folder"
_ADVICE = {  # errno: what to do, given the file's size in GiB
    errno.ENOSPC: "free some disk space (the file takes {gib:.2f} GiB) or write to another disk",
    errno.EDQUOT: "your disk quota is used up: free some space (the file takes {gib:.2f} GiB) or write elsewhere",
    errno.EACCES: _PERMISSIONS,
    errno.EPERM: _PERMISSIONS,
    errno.EROFS: "the disk is read-only: write to another folder",
    errno.ENAMETOOLONG: "choose a shorter file name",
    errno.ENOENT: "the folder does not exist (any more): create it or choose another",
}


def temporary_name(name):
    """A hidden name beside `name` for the file being written, within NAME_MAX_BYTES."""
    suffix = f".{uuid.uuid4().hex[:8]}.partial"
    stem = os.fsencode(name)[: NAME_MAX_BYTES - 1 - len(suffix)].decode(errors="ignore")
    return f".{stem}{suffix}"


def _nbytes(dtype, shape):
    return math.prod(shape) * torch.empty((), dtype=dtype).element_size()


def layout(entries, metadata=None):
    """entries: {name: (torch dtype, shape)}. Returns (header bytes, {name: absolute offset}, file size)."""
    header, offsets, position = {}, {}, 0
    if metadata:
        header["__metadata__"] = dict(sorted(metadata.items()))
    for name, (dtype, shape) in sorted(entries.items(), key=lambda item: (_ORDER[item[1][0]], item[0])):
        size = _nbytes(dtype, shape)
        header[name] = {"dtype": DTYPE_NAMES[dtype], "shape": list(shape), "data_offsets": [position, position + size]}
        offsets[name] = position
        position += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    start = 8 + len(text)
    return struct.pack("<Q", len(text)) + text, {k: start + v for k, v in offsets.items()}, start + position


class SafetensorsWriter:
    """with SafetensorsWriter(path, entries, metadata) as writer: writer.write(name, tensor) for
    every entry; the file appears at `path` when the block ends without an error."""

    def __init__(self, path, entries, metadata=None, overwrite=False):
        self.path = os.fspath(path)
        self.entries = dict(entries)
        self.metadata = metadata
        self.overwrite = overwrite
        self.written = set()

    def _refuse_existing(self):
        if not self.overwrite and os.path.exists(self.path):
            raise SD35FP8Error(f"{os.path.basename(self.path)} already exists in {os.path.dirname(self.path)}: "
                               "choose another file name, or allow overwriting.")

    def _failure(self, error, detail=""):
        advice = _ADVICE.get(error.errno, "check the disk and the folder").format(gib=self.size / 1024 ** 3)
        return SD35FP8Error(f"Could not write {os.path.basename(self.path)} to {os.path.dirname(self.path)}: "
                            f"{error.strerror or error}{detail}. Nothing was written: {advice}, then run again.")

    def __enter__(self):
        self._refuse_existing()
        header, self.offsets, self.size = layout(self.entries, self.metadata)
        folder, name = os.path.split(self.path)
        name_bytes = len(os.fsencode(name))
        if name_bytes > NAME_MAX_BYTES:
            raise self._failure(OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG)),
                                f" (the name takes {name_bytes} bytes, at most {NAME_MAX_BYTES})")
        self.temp_path = os.path.join(folder, temporary_name(name))
        try:
            self.file = open(self.temp_path, "xb")
        except OSError as e:
            raise self._failure(e) from None
        try:
            self.file.write(header)
            self.file.truncate(self.size)
        except OSError as e:
            self._discard()
            raise self._failure(e) from None
        return self

    def write(self, name, tensor):
        dtype, shape = self.entries[name]
        if tensor.dtype != dtype or tuple(tensor.shape) != tuple(shape) or name in self.written:
            raise ValueError(f"{name}: got {tensor.dtype} {tuple(tensor.shape)}, planned {dtype} {tuple(shape)} "
                             f"{'(written twice)' if name in self.written else ''}")
        data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
        self.file.seek(self.offsets[name])
        self.file.write(data.data)
        self.written.add(name)

    def __exit__(self, exc_type, exc, traceback):
        if exc is None:
            try:
                self._finish()
            except BaseException:
                self._discard()
                raise
            return False
        self._discard()
        if isinstance(exc, OSError):
            raise self._failure(exc) from None
        return False

    def _finish(self):
        missing = sorted(set(self.entries) - self.written)
        if missing:
            raise ValueError(f"{len(missing)} planned tensors were never written, e.g. {missing[:3]}")
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            self._refuse_existing()
            os.replace(self.temp_path, self.path)
        except OSError as e:
            raise self._failure(e) from None

    def _discard(self):
        self.file.close()
        if os.path.exists(self.temp_path):
            os.remove(self.temp_path)
