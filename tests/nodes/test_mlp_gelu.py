"""The loader moves each MMDiT MLP's GELU into its FP8 fc2 (nodes/mlp_gelu.py), inside the real ComfyUI
(in-process). On this CPU fc2 runs the weight-only path: GELU, then its linear, so the model computes
exactly what it computed with the GELU in its place; the fused GELU + FP8 quantization kernel runs on
a GPU (tests/gpu/test_gelu_quantize.py)."""
import pytest
import torch
from safetensors.torch import save_file

from devtools.numerics import relative_error
from devtools.tiny_sd3 import mmdit_state_dict, write_diffusion_model
from tests.nodes.test_loaders import LORA_BOUND, layer_output, load_diffusion_model, mmdit_output, random_inputs

MLPS = 3  # two joint blocks: both streams of block 0, the image stream of block 1 (its context stream is pre-only)


def mlps(model_patcher):
    from comfy.ldm.modules.diffusionmodules.mmdit import Mlp
    return [m for m in model_patcher.model.diffusion_model.modules() if isinstance(m, Mlp)]


def put_gelu_back(model_patcher):
    """The MLPs as ComfyUI builds them."""
    for mlp in mlps(model_patcher):
        mlp.act = torch.nn.GELU(approximate="tanh")
        mlp.fc2.input_activation = None


def load(pack, models_dir, variant="large"):
    write_diffusion_model(models_dir / "diffusion_models" / f"{variant}.safetensors", variant=variant,
                          seed=int(torch.randint(0, 10**6, ())))
    return load_diffusion_model(pack, f"{variant}.safetensors")


@pytest.mark.parametrize("variant", ["large", "medium"])
def test_each_fp8_fc2_applies_its_mlps_gelu_and_the_model_computes_the_same(pack, models_dir, variant):
    from sd35_fp8.quant.kernels.gelu_quantize import GELU_TANH
    model = load(pack, models_dir, variant)
    assert len(mlps(model)) == MLPS
    for mlp in mlps(model):
        assert isinstance(mlp.act, torch.nn.Identity) and mlp.fc2.input_activation == GELU_TANH
    modules = dict(model.model.diffusion_model.named_modules())
    quantized = {n for n, m in modules.items() if getattr(m, "weight_scale", None) is not None}
    assert {n + ".fc2" for n, m in modules.items() if m in mlps(model)} <= quantized
    # the state dict (saving, LoRA keys): the file's tensors and the scales, nothing else
    file_keys = set(mmdit_state_dict(variant, prefix=""))
    assert set(model.model.diffusion_model.state_dict()) == file_keys | {n + ".weight_scale" for n in quantized}
    inputs = random_inputs()
    as_bf16 = {name: value.bfloat16() for name, value in inputs.items()}  # bf16 inputs: the MMDiT runs in bf16
    moved = mmdit_output(model, inputs), mmdit_output(model, as_bf16)
    put_gelu_back(model)
    assert torch.equal(moved[0], mmdit_output(model, inputs))
    assert torch.equal(moved[1], mmdit_output(model, as_bf16))


def test_kept_fc2_layers_keep_their_gelu(pack):
    from comfy.ldm.modules.diffusionmodules.mmdit import Mlp
    from sd35_fp8.nodes.model_loading import build_fp8_model
    from sd35_fp8.quant.kernels.gelu_quantize import GELU_TANH
    from sd35_fp8.quant.policy import POLICIES, QuantPolicy
    default = POLICIES["fp8_default"]
    policy = QuantPolicy("keep_one_fc2", "fp8_default but block 0's image-stream fc2 kept",
                         tuple(rf"(?!joint_blocks\.0\.x_block\.mlp\.fc2$){p}" for p in default.quantized_layers))
    weights = mmdit_state_dict("large", prefix="")
    model, _, _ = build_fp8_model(iter(weights.items()), len(weights), 0, "tiny", "tiny", policy)
    blocks = model.model.diffusion_model.joint_blocks
    kept = blocks[0].x_block.mlp
    assert isinstance(kept, Mlp) and kept.fc2.weight_scale is None and kept.fc2.weight.dtype != torch.float8_e4m3fn
    assert isinstance(kept.act, torch.nn.GELU) and kept.fc2.input_activation is None
    for moved in (blocks[0].context_block.mlp, blocks[1].x_block.mlp):
        assert isinstance(moved.act, torch.nn.Identity) and moved.fc2.input_activation == GELU_TANH


@pytest.fixture
def lora_on_fc2(pack, models_dir, tmp_path):
    """A model from our loader with a rank-4 LoRA on block 0's image-stream fc2 through the stock
    LoraLoader, the layer, and its weight with the LoRA merged."""
    import folder_paths
    import nodes
    model = load(pack, models_dir)
    layer = model.model.diffusion_model.joint_blocks[0].x_block.mlp.fc2
    out_features, in_features = layer.weight.shape
    generator = torch.Generator().manual_seed(1)
    up = torch.randn(out_features, 4, generator=generator) * 0.06
    down = torch.randn(4, in_features, generator=generator) * 0.06
    (tmp_path / "loras").mkdir()
    save_file({"lora_unet_joint_blocks_0_x_block_mlp_fc2.lora_up.weight": up,
               "lora_unet_joint_blocks_0_x_block_mlp_fc2.lora_down.weight": down},
              str(tmp_path / "loras" / "fc2_lora.safetensors"))
    folder_paths.add_model_folder_path("loras", str(tmp_path / "loras"), is_default=True)
    patched, = nodes.LoraLoaderModelOnly().load_lora_model_only(model, "fc2_lora.safetensors", 1.0)
    weight_before = layer.weight.float() * layer.weight_scale
    return patched, layer, weight_before, weight_before + up @ down


@pytest.mark.parametrize("low_vram", [False, True])  # merged before sampling; applied per call
def test_a_lora_on_fc2_sees_the_gelu(lora_on_fc2, low_vram):
    patched, layer, weight_before, expected = lora_on_fc2
    if low_vram:
        patched.load(torch.device("cpu"), lowvram_model_memory=1)
    else:
        patched.patch_model()
    x = torch.randn(3, layer.weight.shape[1], dtype=layer.bias.dtype) * 1.5  # fc2's input before the GELU
    gelu, bias = torch.nn.functional.gelu(x.float(), approximate="tanh"), layer.bias.float()
    out = layer_output(layer, x)
    assert relative_error(out, gelu @ expected.t() + bias) <= LORA_BOUND
    assert relative_error(out, gelu @ weight_before.t() + bias) > 2 * LORA_BOUND, "the LoRA must change the layer"
    inputs = random_inputs()
    moved = mmdit_output(patched, inputs)
    put_gelu_back(patched)
    assert torch.equal(moved, mmdit_output(patched, inputs))
    patched.detach() if low_vram else patched.unpatch_model()


def test_a_joint_block_compiles_without_graph_breaks(pack, models_dir):
    from comfy.ldm.modules.attention import attention_pytorch
    model = load(pack, models_dir, "medium")
    block = model.model.diffusion_model.joint_blocks[0]
    # ComfyUI's CPU attention (sub-quadratic) asks psutil for free memory, which dynamo cannot
    # trace; torch's SDPA, ComfyUI's attention on GPUs, stands in for it.
    options = {"optimized_attention_override": lambda attention, *args, **kwargs: attention_pytorch(*args, **kwargs)}
    hidden = 128
    context, x, c = torch.randn(2, 77, hidden), torch.randn(2, 64, hidden), torch.randn(2, hidden)
    graphs = []

    def keep_graph(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    with torch.no_grad():
        compiled = torch.compile(block, fullgraph=True, backend=keep_graph)  # fullgraph: a break raises
        traced = compiled(context, x, c=c, transformer_options=options)
        eager = block(context, x, c=c, transformer_options=options)
    assert len(graphs) == 1
    # the block's body sits in a subgraph (ComfyUI wraps it in activation checkpointing)
    targets = [str(node.target) for module in graphs[0].modules() if isinstance(module, torch.fx.GraphModule)
               for node in module.graph.nodes]
    assert sum("gelu" in t for t in targets) == 2  # both streams' MLPs, in their fc2
    for out, expected in zip(traced, eager):
        assert torch.equal(out, expected)
