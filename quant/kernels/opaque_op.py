"""A Triton kernel that torch.compile keeps as one kernel and eager code calls directly.

Registered as a torch.library op, so Inductor does not trace into the kernel (it stays one kernel,
and eager and compiled runs compute the same thing). Given a version of the implementation that
launches through torch.library.wrap_triton, the op is a triton_op (torch 2.6+): Inductor then
launches the kernel from its own generated code, as it launches its own kernels, instead of
calling a custom op through the dispatcher into Python and Triton's launcher at every call (a
compiled SD3.5 Medium step on an H200 queued in 49 ms against stock's 31: bench/analysis.md,
"Tenth session"). Otherwise it is an opaque custom op. In eager either only costs host time:
cProfile of three eager SD3.5 Large steps under ComfyUI 0.33 on an H200 put 70 of 907 ms (no LoRA)
and 214 of 1350 ms (with a LoRA) in torch.library's wrapper around these kernels, 150-240 us a call
(bench/analysis.md, "Sixth session"). So eager calls skip it.
"""
import torch


def compiled_code_launches_kernels():
    """Whether this torch launches an OpaqueToCompile kernel from compiled code itself (triton_op,
    torch 2.6+) rather than through the dispatcher and Python at every call."""
    return hasattr(torch.library, "triton_op")


def launch_directly(kernel):
    """The launcher of eager calls (`wrap` of the triton_kernels.py functions): the kernel itself."""
    return kernel


class OpaqueToCompile:
    """impl registered as the op `name` (fake: its shape function; traceable: impl launching through
    torch.library.wrap_triton, or None); calling this calls impl, through the op only while
    torch.compile traces. `op` is the registered op, for torch's checks. Register each name once per
    process (callers cache the instance)."""

    def __init__(self, name, impl, fake, device_types="cuda", traceable=None):
        self.impl = impl
        self.op = None
        if traceable is not None and compiled_code_launches_kernels():
            self.op = torch.library.triton_op(name, traceable, mutates_args=())
        elif hasattr(torch.library, "custom_op"):  # torch < 2.4: torch.compile traces the kernel itself
            self.op = torch.library.custom_op(name, impl, mutates_args=(), device_types=device_types)
            self.op.register_fake(fake)

    def __deepcopy__(self, memo):
        # The op is registered once per process and its library cannot be copied; ComfyUI 0.3.x deep-copies
        # a model's options at every clone of its ModelPatcher (LoraLoader, ModelSamplingSD3), and our FP8
        # attention override there holds one of these.
        return self

    def __call__(self, *args):
        if self.op is not None and torch.compiler.is_compiling():
            return self.op(*args)
        return self.impl(*args)
