"""Compile with CUDA graphs: stock TorchCompileModel's compile (Inductor) with Inductor's CUDA graphs,
which replay a step's kernels without launching each one from Python. A compiled SD3.5 step on an
H200 leaves the GPU idle a fifth (Large) to a quarter (Medium) of the time between kernels, the host
launching them (bench/analysis.md, "Eleventh session"); stock's node offers no CUDA graphs with
Inductor."""
import torch
from comfy_api.torch_helpers import set_torch_compile_wrapper

from . import comfy_versions
from .report import CATEGORY


def compile_with_cuda_graphs(model):
    """A copy of model (a MODEL) that samples through torch.compile (Inductor) with CUDA graphs."""
    refusal = cuda_graphs_refusal()
    if refusal is not None:
        raise RuntimeError(refusal)
    compiled = comfy_versions.clone_for_compile(model)
    set_torch_compile_wrapper(model=compiled, backend="inductor",
                              options={**comfy_versions.stock_compile_options(), "triton.cudagraphs": True})
    return compiled


def cuda_graphs_refusal():
    """Why Inductor's CUDA graphs cannot run in this process, or None. ComfyUI's main.py starts torch with
    cudaMallocAsync on nearly every CUDA setup (its cuda_malloc module; always with CUDA 13), whose
    pools Inductor's CUDA graph trees cannot use: on an H100 with torch 2.11 they failed at the first
    step ("cudaMallocAsync does not yet support checkPoolLiveAllocations"; pytorch/pytorch#158641, open).
    Inductor's CUDA graphs without trees (triton.cudagraph_trees off) failed there too, under DynamicVRAM:
    "CUDA driver error: invalid argument" at the first kernel of the recording, then an abort in the
    allocator's free."""
    if torch.cuda.is_available() and torch.cuda.get_allocator_backend() == "cudaMallocAsync":
        return ("TorchCompileModel with CUDA graphs needs PyTorch's native CUDA allocator, and this ComfyUI "
                "runs cudaMallocAsync (its default), on which Inductor's CUDA graphs fail. Start ComfyUI with "
                "--disable-cuda-malloc to use this node, or use TorchCompileModel instead.")
    return None


class SD35FP8CompileCudaGraphs:
    DESCRIPTION = ("TorchCompileModel (inductor) with CUDA graphs: after the first steps at an image size, "
                   "each step replays its recorded kernels instead of launching them one by one from Python, "
                   "which is what a compiled step waits for on a GPU faster than its CPU. Takes any MODEL. "
                   "The graphs are recorded where the whole model sits on the GPU; with ComfyUI's offloading "
                   "(low VRAM) it runs as plain TorchCompileModel. Each image size and batch records its own "
                   "graphs (memory for one step's activations, kept while the model is loaded). Needs ComfyUI started "
                   "with --disable-cuda-malloc (PyTorch's native allocator).")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "compile"
    EXPERIMENTAL = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",)}}

    def compile(self, model):
        return (compile_with_cuda_graphs(model),)


NODE_CLASS_MAPPINGS = {"SD35FP8CompileCudaGraphs": SD35FP8CompileCudaGraphs}
NODE_DISPLAY_NAME_MAPPINGS = {"SD35FP8CompileCudaGraphs": "TorchCompileModel with CUDA graphs"}
