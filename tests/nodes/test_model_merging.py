"""ComfyUI's ModelMergeSimple on our FP8 model, in-process in the real ComfyUI, against the same merge of the
unquantized models. The merge reads the other model's weights through ModelPatcher.get_key_patches, which
hands an FP8 weight over with the layer's convert_weight (its scale)."""
import pytest
import torch

from devtools.numerics import relative_error
from devtools.tiny_sd3 import write_checkpoint

# The final latent's error against the unquantized merge: 0.004-0.011 over four draws of each case on both
# hosts, where each FP8 model alone is 0.022-0.026 from its unquantized one.
MERGE_ERROR_BOUND = 0.03


@pytest.mark.parametrize("quantized", ["first", "second", "both"])
def test_model_merge_simple_of_fp8_models_samples_as_the_unquantized_merge(pack, models_dir, quantized):
    import nodes
    from comfy_extras.nodes_model_merging import ModelMergeSimple
    seed = int(torch.randint(0, 10**6, ()))
    loader = pack.NODE_CLASS_MAPPINGS["SD35FP8CheckpointLoader"]()
    models = []
    for index in range(2):
        write_checkpoint(models_dir / "checkpoints" / f"{index}.safetensors", clip_l=False, vae=False,
                         seed=seed + index)
        fp8_wanted = quantized == "both" or index == ("first", "second").index(quantized)
        models.append({policy: loader.load(f"{index}.safetensors", policy)[0]
                       for policy in (("fp8_default", "off") if fp8_wanted else ("off",))})

    generator = torch.Generator().manual_seed(seed)
    positive, negative = ([[torch.randn(1, 77, 4096, generator=generator),
                            {"pooled_output": torch.randn(1, 2048, generator=generator)}]] for _ in range(2))
    latent = {"samples": torch.zeros(1, 16, 16, 16)}

    # in inference mode, as ComfyUI runs its nodes: outside it, on 0.3.75, the unquantized model's weights require
    # grad, and the stochastic rounding of a merge into an fp8 weight (by reading, ComfyUI's own too) fails on them
    @torch.inference_mode()
    def sample(first, second):
        merged = ModelMergeSimple().merge(first, second, 0.5)[0]
        return nodes.KSampler().sample(merged, seed, 4, 4.0, "euler", "simple", positive, negative, latent)[0][
            "samples"].float()

    expected = sample(models[0]["off"], models[1]["off"])
    assert relative_error(expected, sample(models[0]["off"], models[0]["off"])) > 0.1, "the merge must show"
    out = sample(*(model.get("fp8_default", model["off"]) for model in models))
    assert relative_error(out, expected) <= MERGE_ERROR_BOUND
