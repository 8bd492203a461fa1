"""Run by tests/gpu/test_dynamic_vram_compile.py in a process of its own, since DynamicVRAM is switched
on for a whole process: `python -m tests.gpu.dynamic_vram_compile SEED DIR`. Loads a tiny SD3.5 file
through our diffusion-model loader node with DynamicVRAM on, adds a LoRA as LoraLoader does, runs stock
TorchCompileModel on it as a user's graph would, and our TorchCompileModel with CUDA graphs, samples one
step eager and compiled (with CUDA graphs twice: recorded, then replayed; then once more with every
weight offloaded), and prints the comparison as JSON on its last line. Where this torch runs cudaMallocAsync
(as ComfyUI's main.py starts it), the CUDA-graphs node must refuse with its message instead.
Exit code 3: this ComfyUI has no DynamicVRAM (it exists from 0.33) or comfy-aimdo is missing."""
import json
import os
import sys
from pathlib import Path

import torch

from devtools.numerics import relative_error
from devtools.random_lora import random_lora
from devtools.tiny_sd3 import mmdit_state_dict, write_diffusion_model
from tests.gpu.dynamic_vram_lora import sample
from tests.gpu.dynamic_vram_child import import_comfy_with_dynamic_vram


def main(seed, folder):
    pack = import_comfy_with_dynamic_vram()
    import comfy.model_management
    import comfy.sd
    import folder_paths
    from comfy_extras.nodes_torch_compile import TorchCompileModel
    from torch._inductor.cudagraph_trees import get_manager
    from sd35_fp8.nodes.compile_cuda_graphs import cuda_graphs_refusal
    (folder / "diffusion_models").mkdir(parents=True, exist_ok=True)
    write_diffusion_model(folder / "diffusion_models" / "tiny.safetensors", variant="medium", seed=seed)
    folder_paths.add_model_folder_path("diffusion_models", str(folder / "diffusion_models"), is_default=True)
    model, = pack.NODE_CLASS_MAPPINGS["SD35FP8DiffusionModelLoader"]().load("tiny.safetensors", "fp8_default")
    lora = random_lora(mmdit_state_dict("medium", seed=seed, prefix=""), seed + 1, rank=4, std=0.13)
    with_lora, _ = comfy.sd.load_lora_for_models(model, None, lora, 1.0, 0)
    compiled = TorchCompileModel.execute(with_lora, "inductor").result[0]
    generator = torch.Generator().manual_seed(seed + 2)
    positive, negative = ([[torch.randn(1, 154, 4096, generator=generator) * 0.5,
                            {"pooled_output": torch.randn(1, 2048, generator=generator) * 0.5}]] for _ in range(2))
    eager = sample(with_lora, positive, negative, seed)
    without_lora = sample(model, positive, negative, seed)
    compiled_latent = sample(compiled, positive, negative, seed)
    result = {"loaded_patcher": type(model).__name__, "compiled_patcher": type(compiled).__name__,
              "compiled_error": relative_error(compiled_latent, eager),
              "lora_effect": relative_error(eager, without_lora),
              "finite": bool(torch.isfinite(compiled_latent).all()),
              "allocator": torch.cuda.get_allocator_backend()}
    refusal = cuda_graphs_refusal()
    if refusal is not None:
        try:
            pack.NODE_CLASS_MAPPINGS["SD35FP8CompileCudaGraphs"]().compile(with_lora)
            result["graphs_refused_with"] = None
        except RuntimeError as error:
            result["graphs_refused_with"] = str(error)
        print(json.dumps({**result, "refusal": refusal}), flush=True)
        os._exit(0)
    with_graphs, = pack.NODE_CLASS_MAPPINGS["SD35FP8CompileCudaGraphs"]().compile(with_lora)
    torch._dynamo.utils.counters.clear()
    recorded = sample(with_graphs, positive, negative, seed)
    replayed = sample(with_graphs, positive, negative, seed)
    graphs = get_manager(torch.cuda.current_device(), create_if_none_exists=False)
    recorded_graphs = 0 if graphs is None else sum(len(nodes) for nodes in graphs.roots.values())
    graph_skips = torch._dynamo.utils.counters["inductor"]["cudagraph_skips"]
    # with every weight offloaded (ComfyUI's --novram), which moves the weights inside the forward
    comfy.model_management.unload_all_models()
    comfy.model_management.vram_state = comfy.model_management.VRAMState.NO_VRAM
    offloaded, = pack.NODE_CLASS_MAPPINGS["SD35FP8CompileCudaGraphs"]().compile(with_lora)
    offloaded_latent = sample(offloaded, positive, negative, seed)
    print(json.dumps({**result, "graphs_error": relative_error(recorded, eager),
                      "graphs_replayed_equal": bool(torch.equal(replayed, recorded)),
                      "graphs_recorded": recorded_graphs, "graph_skips": graph_skips,
                      "offloaded_error": relative_error(offloaded_latent, eager)}), flush=True)
    # comfy-aimdo 0.4.13 can crash in the interpreter's teardown (tests/gpu/dynamic_vram_lora.py)
    os._exit(0)


if __name__ == "__main__":
    main(int(sys.argv[1]), Path(sys.argv[2]))
