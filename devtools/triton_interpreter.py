"""Runs Triton kernels with FP8 values on the CPU (TRITON_INTERPRET=1) with the GPU's FP8 rounding.

Triton's interpreter (3.8 and earlier) rounds a float to an fp8 mantissa without carrying into the
exponent: 124.0 becomes 64.0 instead of 128.0 in e4m3, and subnormals round differently, so
about 2% of the values in a kernel's FP8 casts come out wrong. GPUs round to nearest even with
the carry, as torch does; `use_torch_fp8_rounding()` makes the interpreter do the same for every
conversion from or to an 8-bit float. Call it in the interpreted process before launching;
`run_interpreted` starts such a process.
"""
import os
import subprocess
import sys

import numpy as np
import torch

from devtools.comfy_host import REPO


def run_interpreted(code: str, timeout: int = 600):
    """Runs `code` in a fresh Python from the repository with TRITON_INTERPRET=1 (Triton reads it at
    import, so not in this process); the code saves what the test reads back."""
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=timeout,
                   env={**os.environ, "TRITON_INTERPRET": "1"})


def use_torch_fp8_rounding():
    import triton.language as tl
    from triton.runtime import interpreter

    torch_dtypes = {tl.float8e4nv: torch.float8_e4m3fn, tl.float8e5: torch.float8_e5m2,
                    tl.float16: torch.float16, tl.bfloat16: torch.bfloat16, tl.float32: torch.float32}
    bit_views = {8: torch.uint8, 16: torch.int16, 32: torch.int32}
    interpreted = interpreter._convert_float

    def convert_float(values, input_dtype, output_dtype, rounding_mode):
        if 8 not in (input_dtype.primitive_bitwidth, output_dtype.primitive_bitwidth) or \
                input_dtype not in torch_dtypes or output_dtype not in torch_dtypes:
            return interpreted(values, input_dtype, output_dtype, rounding_mode)
        bits = torch.from_numpy(np.ascontiguousarray(values)).view(bit_views[input_dtype.primitive_bitwidth])
        converted = bits.view(torch_dtypes[input_dtype]).to(torch_dtypes[output_dtype])
        unsigned = getattr(np, f"uint{output_dtype.primitive_bitwidth}")
        return converted.view(bit_views[output_dtype.primitive_bitwidth]).numpy().view(unsigned).reshape(values.shape)

    interpreter._convert_float = convert_float
