"""ComfyUI's own Save Checkpoint and Save Model (comfy_extras/nodes_model_merging.py) on a MODEL of ours.

Both load the MODEL (comfy.sd.save_checkpoint) and hand the diffusion model's state dict to its model
config's process_unet_state_dict_for_saving (0.3.75 and 0.33 alike). For our FP8 linears that state
dict has an fp8 `weight` and a `weight_scale` with no format marker: ComfyUI and older versions of this
pack read such a weight with scale 1, a model that draws noise, with nothing but a log line of
"unexpected" keys. A LoRA that stays beside an FP8 weight (nodes/ops.py) was not in it either.

Our models' config writes instead what the save node writes at per_channel: every tensor with the
patches of the MODEL being saved applied (nodes/patched_tensors.py), each FP8 weight with its scale and
a comfy_quant marker. This pack's loaders read that file as it was saved. Stock loaders expect one scale
per tensor (0.33 fails on the CPU outside inference mode; 0.3.75 reads markers only from a header these
nodes do not write): a file for them is Save SD3.5 Checkpoint (FP8) at per_tensor.
"""
import weakref

import comfy.model_management

from ..quant.errors import SD35FP8Error
from ..quant.files.formats.comfy_mixed import stored_tensors
from .patched_tensors import patched_model_tensors

PREFIX = "diffusion_model."


def save_fp8_layers_with_their_scales(model_patcher):
    """Has ComfyUI's save nodes write model_patcher's FP8 model as this module says (its clones share it)."""
    model_ref = weakref.ref(model_patcher.model)

    def process_unet_state_dict_for_saving(_stock_state_dict):
        model = model_ref()
        patcher = _patcher_being_saved(model)
        tensors = {}
        for name, value in patched_model_tensors(patcher, model.diffusion_model, PREFIX):
            tensors.update(stored_tensors(name, value))
        config = model.model_config
        return type(config).process_unet_state_dict_for_saving(config, tensors)

    model_patcher.model.model_config.process_unet_state_dict_for_saving = process_unet_state_dict_for_saving


def _patcher_being_saved(model):
    """The ModelPatcher ComfyUI loaded `model` with: save_checkpoint loads the one it saves, and loading a
    patcher unloads its clones (comfy.model_management.load_models_gpu)."""
    for loaded in comfy.model_management.current_loaded_models:
        patcher = loaded.model
        if patcher is not None and patcher.model is model:
            return patcher
    raise SD35FP8Error("ComfyUI was asked to save an SD3.5 FP8 model it has not loaded (its save nodes load the "
                       "model first): use Save SD3.5 Checkpoint (FP8) to save it.")
