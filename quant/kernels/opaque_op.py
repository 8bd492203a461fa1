"""A Triton kernel that torch.compile sees as one opaque custom op and eager code calls directly.

The custom op keeps Inductor from tracing into the kernel (it stays one kernel, and eager and
compiled runs compute the same thing). In eager it only costs host time: cProfile of three eager
SD3.5 Large steps under ComfyUI 0.33 on an H200 put 70 of 907 ms (no LoRA) and 214 of 1350 ms (with
a LoRA) in torch.library's wrapper around these kernels, 150-240 us a call (bench/analysis.md,
"Sixth session"). So eager calls skip it.
"""
import torch


class OpaqueToCompile:
    """impl registered as the custom op `name` (fake: its shape function); calling this calls impl,
    through the op only while torch.compile traces. `op` is the registered op, for torch's checks.
    Register each name once per process (callers cache the instance)."""

    def __init__(self, name, impl, fake, device_types="cuda"):
        self.impl = impl
        self.op = None
        if hasattr(torch.library, "custom_op"):  # torch < 2.4: torch.compile traces the kernel itself
            self.op = torch.library.custom_op(name, impl, mutates_args=(), device_types=device_types)
            self.op.register_fake(fake)

    def __call__(self, *args):
        if self.op is not None and torch.compiler.is_compiling():
            return self.op(*args)
        return self.impl(*args)
