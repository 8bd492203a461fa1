"""ComfyUI's own Save Model and Save Checkpoint nodes on our FP8 model (in-process, the real nodes)."""
import shutil

import pytest
import torch

from devtools import tiny_sd3
from devtools.numerics import relative_error
from devtools.random_lora import random_lora
from tests.fixtures.quantized_files import same_bits
from tests.nodes.test_loaders import load_diffusion_model, mmdit_output, random_inputs
from tests.nodes.test_save import BAKED_LORA_OUTPUT_BOUND, save, stored_state


def stock_save(node, model, clip, vae):
    from comfy_extras import nodes_model_merging
    if node == "ModelSave":
        nodes_model_merging.ModelSave().save(model, "stock/saved")
    else:
        nodes_model_merging.CheckpointSave().save(model, clip, vae, "stock/saved")


@pytest.mark.parametrize("node", ["ModelSave", "CheckpointSave"])
def test_stock_save_nodes_write_the_fp8_model_with_its_scales_and_loras(pack, models_dir, output_dir, node):
    """Before, they wrote each FP8 weight with its scale but no format marker, which ComfyUI and this pack
    read with scale 1 (1.1-1.3 from the model at the tiny MMDiT's output), and lost a LoRA beside an FP8
    weight on 0.3.75."""
    import comfy.sd
    seed = int(torch.randint(0, 10**6, ()))
    tiny_sd3.write_checkpoint(models_dir / "checkpoints" / "source.safetensors", variant="medium", seed=seed)
    model, clip, vae = pack.NODE_CLASS_MAPPINGS["SD35FP8CheckpointLoader"]().load("source.safetensors", "fp8_default")[:3]
    lora = random_lora(model.model.diffusion_model.state_dict(), seed + 1, rank=4, std=0.15)
    with_lora = comfy.sd.load_lora_for_models(model, None, lora, 1.0, 0)[0]
    inputs = random_inputs()
    with_lora.patch_model()
    expected = mmdit_output(with_lora, inputs)
    with_lora.unpatch_model()
    assert relative_error(expected, mmdit_output(model, inputs)) > 0.1, "the LoRA must show"

    stock_save(node, with_lora, clip, vae)
    (written,) = (output_dir / "stock").glob("saved_*.safetensors")
    shutil.copy(written, models_dir / "diffusion_models" / "stock_saved.safetensors")
    save(pack, with_lora, "ours.safetensors")
    from_stock_node = load_diffusion_model(pack, "stock_saved.safetensors")
    from_save_node = load_diffusion_model(pack, "ours.safetensors")

    stock_file, save_node_file = stored_state(from_stock_node), stored_state(from_save_node)
    assert stock_file.keys() == save_node_file.keys()
    assert all(same_bits(stock_file[k], save_node_file[k]) for k in stock_file)
    assert sum(v.dtype == torch.float8_e4m3fn for v in stock_file.values()) == 19
    assert relative_error(mmdit_output(from_stock_node, inputs), expected) <= BAKED_LORA_OUTPUT_BOUND


def test_the_model_saved_after_sampling_a_clone_with_a_lora_is_the_model_without_it(pack, models_dir, output_dir):
    """ComfyUI keeps a sampled clone's LoRA patched in until another clone of the model loads; Save Model of the
    model itself must then write the model as loaded from its file."""
    import comfy.model_management
    import comfy.sd
    seed = int(torch.randint(0, 10**6, ()))
    tiny_sd3.write_diffusion_model(models_dir / "diffusion_models" / "source.safetensors", variant="medium", seed=seed)
    model = load_diffusion_model(pack, "source.safetensors")
    lora = random_lora(model.model.diffusion_model.state_dict(), seed + 1, rank=4, std=0.15)
    with_lora = comfy.sd.load_lora_for_models(model, None, lora, 1.0, 0)[0]
    inputs = random_inputs()
    without = mmdit_output(model, inputs)
    comfy.model_management.load_models_gpu([with_lora])
    assert relative_error(mmdit_output(with_lora, inputs), without) > 0.1, "the LoRA must be patched in"

    stock_save("ModelSave", model, None, None)
    (written,) = (output_dir / "stock").glob("saved_*.safetensors")
    shutil.copy(written, models_dir / "diffusion_models" / "stock_saved.safetensors")
    assert torch.equal(mmdit_output(load_diffusion_model(pack, "stock_saved.safetensors"), inputs), without)
