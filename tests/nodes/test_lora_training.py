"""ComfyUI's LoRA training node (TrainLoraNode, comfy_extras/nodes_train.py) on our FP8 model, in-process in the
real ComfyUI, against the unquantized model trained the same way."""
import inspect

import pytest
import torch

from devtools.tiny_sd3 import write_checkpoint

# Mean over the steps of each loss's relative difference from the unquantized model's: measured 0.003-0.015
# (the unquantized model's own losses vary that much from one process to the next). Adapters handed the
# unscaled fp8 weight would train a model whose weights are off by their scales.
LOSS_DIFFERENCE_BOUND = 0.1


def train(model, latent, positive, bypass_mode):
    """The node's outputs (lora weights, losses) after 6 steps, its inputs as ComfyUI passes them (lists)."""
    from comfy_extras.nodes_train import TrainLoraNode, adapter_maps
    values = dict(model=model, batch_size=1, steps=6, grad_accumulation_steps=1, learning_rate=0.001, rank=4,
                  optimizer="AdamW", loss_function="MSE", seed=0, training_dtype="bf16", lora_dtype="bf16",
                  quantized_backward=False, algorithm=next(iter(adapter_maps)), gradient_checkpointing=False,
                  checkpoint_depth=1, offloading=False, existing_lora="[None]", bucket_mode=False,
                  bypass_mode=bypass_mode)
    parameters = inspect.signature(TrainLoraNode.execute).parameters
    if bypass_mode and "bypass_mode" not in parameters:
        pytest.skip("this ComfyUI's LoRA training has no bypass mode (0.33 has)")
    inputs = {name: [value] for name, value in values.items() if name in parameters}
    # two latents of one image each: 0.3.75's node fails on a single latent batch
    inputs["latents"] = [{"samples": latent[:1]}, {"samples": latent[1:]}]
    inputs["positive"] = [positive, positive]
    outputs = TrainLoraNode.execute(**inputs).args
    losses = next(value for value in outputs if isinstance(value, dict) and "loss" in value)["loss"]
    lora = next(value for value in outputs if isinstance(value, dict) and "loss" not in value)
    return lora, torch.tensor([float(loss) for loss in losses])


@pytest.mark.parametrize("bypass_mode", [False, True])
def test_lora_training_on_the_fp8_model_follows_the_unquantized_one(pack, models_dir, bypass_mode):
    """Before, training without bypass mode failed at its first step ("Promotion for Float8 Types is not
    supported"): ComfyUI handed the adapters the stored fp8 weight."""
    seed = int(torch.randint(0, 10**6, ()))
    write_checkpoint(models_dir / "checkpoints" / "base.safetensors", variant="medium", clip_l=False, vae=False,
                     seed=seed)
    loader = pack.NODE_CLASS_MAPPINGS["SD35FP8CheckpointLoader"]()
    fp8, unquantized = (loader.load("base.safetensors", policy)[0] for policy in ("fp8_default", "off"))
    generator = torch.Generator().manual_seed(seed)
    latent = torch.randn(2, 16, 16, 16, generator=generator)
    positive = [[torch.randn(1, 77, 4096, generator=generator),
                 {"pooled_output": torch.randn(1, 2048, generator=generator)}]]

    lora, losses = train(fp8, latent, positive, bypass_mode)
    _, reference_losses = train(unquantized, latent, positive, bypass_mode)
    assert ((losses - reference_losses).abs() / reference_losses).mean() <= LOSS_DIFFERENCE_BOUND, \
        (losses, reference_losses)
    fp8_layers = [name for name, module in fp8.model.diffusion_model.named_modules()
                  if getattr(module, "weight_scale", None) is not None]
    assert len(fp8_layers) == 19
    # each LoRA's down factor starts at zero (comfy/weight_adapter/lora.py create_train): trained where the
    # gradient reached it through the FP8 layer
    assert all(lora[f"diffusion_model.{name}.lora_down.weight"].abs().amax() > 0 for name in fp8_layers)
