"""bench/host_cost.py builds the linears it times as ComfyUI would: every variant computes the same
layer (within FP8's error), and the LoRA variants carry their LoRA. On the CPU, with the real ComfyUI
in-process (the timing itself is for a GPU machine)."""
import torch

from bench.host_cost import FEATURES, ROWS, linears
from devtools.comfy_host import import_comfy_in_process
from devtools.numerics import relative_error


def test_every_variant_computes_the_layer_and_the_lora_variants_their_lora():
    import_comfy_in_process()
    x = torch.randn(1, ROWS, FEATURES, dtype=torch.bfloat16)
    with torch.inference_mode():
        outputs = {name: module(x).float() for name, module in linears("cpu").items()}
    reference = outputs["stock default (manual_cast)"]
    plain = [name for name in outputs if not name.endswith("+ LoRA")]
    assert len(plain) >= 3 and len(outputs) > len(plain)
    for name in plain:
        assert relative_error(outputs[name], reference) <= 0.1, name
        if name + " + LoRA" in outputs:
            assert relative_error(outputs[name + " + LoRA"], outputs[name]) >= 0.03, name
