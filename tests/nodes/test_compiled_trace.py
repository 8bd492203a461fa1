"""The FP8 MMDiT as the loader builds it for a GPU with FP8 tensor cores, without and with a LoRA
(through ComfyUI's ModelPatcher), traced by torch.compile's Dynamo on fake CUDA tensors (no GPU here):
one graph, no break, with each of our Triton kernels in it as its op, which compiled code launches
itself. A break costs a compiled step host time at every call,
and compiled code that calls into Python (tests/gpu runs the compiled model). The trace runs in a
fresh Python: Dynamo's shape environments keep the fake weights alive after it, where later tests count
the fp8 tensors left behind (test_formats_loading.py)."""
import json
import subprocess
import sys

import pytest

from devtools.comfy_host import REPO

OUR_OPS = {"sd35_fp8.layer_norm_modulate_quantize_rows.default", "sd35_fp8.gelu_quantize_rows.default",
           "sd35_fp8.quantize_rows.default", "sd35_fp8.small_m_linear.default", "sd35_fp8.joint_qkv.default"}

_TRACE = """
import json, torch
from torch._subclasses.fake_tensor import FakeTensorMode
from devtools.comfy_host import import_comfy_in_process
import_comfy_in_process()
import comfy.ldm.modules.attention, comfy.ldm.modules.diffusionmodules.mmdit
from devtools.tiny_sd3 import mmdit_state_dict
from sd35_fp8.nodes import model_loading
from sd35_fp8.quant.kernels import row_quantize
from sd35_fp8.quant.kernels.compute_path import FP8_ROWWISE, ComputePath
from sd35_fp8.quant.policy import POLICIES
model_loading.compute_path_for_device = lambda device, force_weight_only=False: ComputePath(FP8_ROWWISE, "test", True)
# On a GPU ComfyUI attends through torch's SDPA; on this CPU it would pick a kernel that asks CUDA for
# its free memory.
comfy.ldm.modules.diffusionmodules.mmdit.optimized_attention = comfy.ldm.modules.attention.attention_pytorch
# the tiny model's 128 columns as if wider than Inductor's one-pass limit, as SD3.5's are
row_quantize.INDUCTOR_ONE_PASS_COLS = 64
weights = mmdit_state_dict("medium", depth=2, prefix="")
model, _, _ = model_loading.build_fp8_model(iter(weights.items()), len(weights), sum(t.numel() for t in weights.values()),
                                            "tiny", "tiny", POLICIES["fp8_default"])
if {lora}:  # rank 8 on block 0's image-stream qkv, kept beside its FP8 weight
    import comfy.weight_adapter
    qkv = model.model.diffusion_model.joint_blocks[0].x_block.attn.qkv
    lora = comfy.weight_adapter.LoRAAdapter(set(), (torch.randn(qkv.weight.shape[0], 8) * 0.05,
                                                   torch.randn(8, qkv.weight.shape[1]) * 0.05, None, None, None, None))
    model = model.clone()
    model.add_patches({{"diffusion_model.joint_blocks.0.x_block.attn.qkv.weight": lora}}, 1.0)
    model.patch_model()
    assert qkv.weight.sd35_low_rank is not None
diffusion_model = model.model.diffusion_model
def fake_cuda(value):  # tensors, and named tuples of them (the side path and its columns), as fake CUDA tensors
    if isinstance(value, tuple):
        return type(value)(*(fake_cuda(item) for item in value))
    return torch.empty_like(value, device="cuda")
with FakeTensorMode(allow_non_fake_inputs=True):
    for module in diffusion_model.modules():  # every weight as a fake CUDA tensor of its shape and dtype
        for name, parameter in list(module._parameters.items()):
            if parameter is not None:
                fake = torch.nn.Parameter(torch.empty_like(parameter, device="cuda"), requires_grad=False)
                low_rank = getattr(parameter, "sd35_low_rank", None)
                if low_rank is not None:
                    fake.sd35_low_rank = fake_cuda(low_rank)
                module._parameters[name] = fake
        for name, buffer in list(module._buffers.items()):
            if buffer is not None:
                module._buffers[name] = torch.empty_like(buffer, device="cuda")
    inputs = dict(x=(2, 16, 16, 16), timesteps=(2,), context=(2, 77, 4096), y=(2, 2048))
    explanation = torch._dynamo.explain(diffusion_model)(
        **{{name: torch.empty(shape, device="cuda", dtype=torch.bfloat16) for name, shape in inputs.items()}})
breaks = [f"{{r.reason[:200]}} at {{r.user_stack[-1].filename}}:{{r.user_stack[-1].lineno}}" for r in explanation.break_reasons]
called = sorted({{str(node.target) for graph in explanation.graphs for node in graph.graph.nodes if node.op == "call_function"}})
with open({path!r}, "w") as out:
    json.dump({{"graphs": explanation.graph_count, "breaks": breaks, "called": called}}, out)
"""


@pytest.mark.parametrize("lora", [False, True])
def test_the_fp8_model_compiles_to_one_graph_with_our_kernels(tmp_path, lora):
    pytest.importorskip("triton", reason="Triton is not installed")
    import torch
    if not hasattr(torch.library, "triton_op"):
        pytest.skip("torch < 2.6 has no triton_op: compiled code calls our kernels through opaque ops there")
    path = tmp_path / "trace.json"
    subprocess.run([sys.executable, "-c", _TRACE.format(path=str(path), lora=lora)], cwd=REPO, check=True, timeout=600)
    trace = json.loads(path.read_text())
    assert trace["graphs"] == 1 and not trace["breaks"], trace["breaks"]
    # the LoRA'd qkv: our one-pass norm with room for the LoRA's columns, written there, for cuBLAS's GEMM
    lora_ops = {"sd35_fp8.layer_norm_modulate_quantize_rows_columns.default"} if lora else set()
    assert OUR_OPS | lora_ops <= set(trace["called"]), trace["called"]
