"""Where ComfyUI versions differ in how a model is built and a layer's weight is loaded, offloaded and
LoRA-patched. Each branch names the version it serves; nodes/ops.py and nodes/model_loading.py use
this module and nothing else that depends on the version.

A LoRA on an FP8Linear stays beside the FP8 weight as a low-rank side path (quant/kernels/low_rank.py).
It reaches the layer one of two ways:
- merged before sampling (full VRAM, every version): ModelPatcher calls the layer's
  convert_weight / set_weight, and set_weight puts the side path on a new weight Parameter;
- per call (low VRAM: weight_function; 0.33 DynamicVRAM: weight_lowvram_function): a LowVramPatch
  that ComfyUI builds, whose class is swapped to ScaledLowVramPatch.
A LoRA whose change is not of low rank is merged into the FP8 weight and requantized instead.
"""
import inspect
from contextlib import contextmanager

import torch
import comfy.float
import comfy.lora
import comfy.model_patcher
import comfy.sd
import comfy.utils
from comfy.ops import cast_bias_weight

from ..quant.kernels.low_rank import lora_beside
from ..quant.kernels.low_rank_columns import adds_after_gemm
from ..quant.scales import weight_scale_like

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# 0.33 (DynamicVRAM) builds a model outside DynamicVRAM when asked to (disable_dynamic); 0.3.x has
# no such argument and no DynamicVRAM.
_BUILDS_OUTSIDE_DYNAMIC_VRAM = "disable_dynamic" in inspect.signature(comfy.sd.load_diffusion_model_state_dict).parameters

# 0.33 moved string_to_seed from comfy.model_patcher to comfy.utils.
string_to_seed = getattr(comfy.utils, "string_to_seed", None) or comfy.model_patcher.string_to_seed

# 0.33 (DynamicVRAM): cast_bias_weight applies weight_lowvram_function in compute_dtype and, with
# want_requant, rounds the result back to the stored dtype; 0.3.x has neither argument.
_CAST_REQUANT_ARGS = "want_requant" in inspect.signature(cast_bias_weight).parameters


class ScaledLowVramPatch(comfy.model_patcher.LowVramPatch):
    """A LoRA applied at call time to an FP8Linear. It leaves the stored weight as it is and keeps
    the LoRA as a side path, found from the patched weight on first use; a LoRA without low-rank
    factors is merged, with a scale of the patched weight's own (merged_scale): given the stored fp8
    tensor it returns the patched fp8 tensor, given stored values in a float dtype (0.33 DynamicVRAM)
    the patched values in that dtype and scale, which ComfyUI then rounds to fp8.

    What is found is kept on the layer (sd35_side_path_found: the patch entries it was found for, the side
    path or None, the merged scale or None, whether the columns were considered), never on the patch:
    0.33's DynamicVRAM keeps patch objects in its pinned-memory registry after their run, and with them
    anything they hold in VRAM."""

    def low_rank(self, stored, rows=None):
        """rows: the rows of the call asking, which decide whether the side path needs the LoRA as FP8 columns
        of the GEMM (quant/kernels/linear_dispatch.py); None: ComfyUI's cast, which asks only whether the LoRA
        stays beside the weight. The columns are made for the first call that joins them: the context stream's
        few rows never do (about 80 MiB of VRAM for a rank-16 LoRA on SD3.5 Large's qkv and fc1)."""
        layer = self.sd35_fp8_layer
        entries, low_rank, merged_scale, columns_considered = self._found(stored)
        if rows is not None and not columns_considered:
            if (low_rank is not None and layer.lora_columns
                    and not adds_after_gemm(rows, layer.in_features)):
                low_rank = low_rank.with_columns(layer.weight_scale)
                if low_rank.columns is not None and _eager_cuda(stored):
                    low_rank = low_rank._replace(columns=low_rank.columns.placed(layer.side_path_arena))
                layer.sd35_side_path_found = (entries, low_rank, merged_scale, True)
        return low_rank

    def _found(self, stored):
        """The layer's sd35_side_path_found for this patch's LoRA, searched for where the layer has none for it."""
        kept = self._kept()
        if kept is not None:
            return kept
        # 0.33's DynamicVRAM builds new patch objects at every load, i.e. every run: the layer keeps the side
        # path of the patch entries it was found for (the same tuples while the LoRA and its strength stay), so
        # a run with an unchanged LoRA does not search again. It stays until another replaces it or the layer
        # is called without a LoRA (_forget_side_path).
        found = getattr(self.sd35_fp8_layer, "sd35_side_path_found", None)
        entries = tuple(self.patches[self.key])
        if found is None or len(found[0]) != len(entries) or any(a is not b for a, b in zip(found[0], entries)):
            found = self._search(stored, entries)
        self.sd35_entries = found[0]
        return found

    def _kept(self):
        """The layer's sd35_side_path_found where this patch has checked it is for its LoRA, else None."""
        found = getattr(self.sd35_fp8_layer, "sd35_side_path_found", None)
        return found if found is not None and found[0] is getattr(self, "sd35_entries", None) else None

    def side_path(self):
        """The side path this patch's LoRA rides on, or None: not searched yet, or merged."""
        kept = self._kept()
        return None if kept is None else kept[1]

    def _search(self, stored, entries):
        """The layer's new sd35_side_path_found for this LoRA (class docstring)."""
        layer = self.sd35_fp8_layer
        patched = self._patched(stored, torch.float32)
        # Under TorchCompileModel the layer is traced once, with its columns if it takes any.
        columns_now = layer.lora_columns and torch.compiler.is_compiling()
        low_rank = lora_beside(stored, layer.weight_scale, patched, layer.compute_dtype, columns_now)
        # A change that is not of low rank (DoRA, OFT, a LoRA of rank > 64) can widen a channel past
        # the range of the layer's scale, which would clip it.
        merged_scale = None if low_rank is not None else weight_scale_like(patched, layer.weight_scale)
        del patched
        eager_cuda = _eager_cuda(stored)
        if eager_cuda and low_rank is not None:
            # its few small tensors would otherwise pin the memory of the transients and
            # activations they land among (quant/kernels/tensor_arena.py)
            low_rank = low_rank.placed(layer.side_path_arena)
        found = (entries, low_rank, merged_scale, columns_now or not layer.lora_columns)
        layer.sd35_side_path_found = found
        if eager_cuda:
            # The search's fp32 copies of the weight (several hundred MB for SD3.5 Large's
            # fc1) would stay in torch's cache for the whole run: under an 8 GiB cap with
            # DynamicVRAM on an H200 that left 30-40 more of Large's weights to stage per step
            # with a LoRA than without (bench/results/lora_033_DynamicVRAM_cap8.json).
            # Not while TorchCompileModel traces the layer, whose LoRA run was measured
            # without this call.
            torch.cuda.empty_cache()
        return found

    def merged_scale(self, stored):
        """The scale of the weight this patch merges into (None where its LoRA stays beside the weight)."""
        return self._found(stored)[2]

    def _patched(self, stored, compute):
        scale = self.sd35_fp8_layer.weight_scale.to(device=stored.device, dtype=compute)
        # 0.33 prefetches the patch tensors to the GPU (prepared_patches); 0.3.x has no such attribute.
        patches = getattr(self, "prepared_patches", None) or self.patches[self.key]
        return comfy.lora.calculate_weight(patches, stored.to(compute) * scale, self.key, intermediate_dtype=compute)

    def __call__(self, weight):
        if self.low_rank(weight) is not None:
            return weight
        compute = weight.dtype if weight.dtype in _FLOAT_DTYPES else torch.float32
        stored = self._patched(weight, compute) / self.merged_scale(weight).to(device=weight.device, dtype=compute)
        if weight.dtype in _FLOAT_DTYPES:
            return stored
        return comfy.float.stochastic_rounding(stored, weight.dtype, seed=string_to_seed(self.key))


def _eager_cuda(tensor):
    return tensor.is_cuda and not torch.compiler.is_compiling()


def _lowvram_function(layer):
    """The patch 0.33's DynamicVRAM sets on the layer (weight_lowvram_function), or None where it sets
    none: 0.3.x and 0.33 without DynamicVRAM never do, and there getattr's default costs an
    nn.Module.__getattr__ and an AttributeError, three times per call of every layer. Traced by
    torch.compile, the plain getattr that Dynamo knows."""
    if torch.compiler.is_compiling():
        return getattr(layer, "weight_lowvram_function", None)
    return layer.__dict__.get("weight_lowvram_function")


def _own_lowvram_patches(layer):
    # ComfyUI creates its LowVramPatch objects at load and at partial unload, in every version;
    # swapping the class keeps the object ComfyUI holds (its prepared patches and pinned memory).
    for patch in (*layer.weight_function, _lowvram_function(layer)):
        if type(patch) is comfy.model_patcher.LowVramPatch:
            patch.__class__ = ScaledLowVramPatch
            patch.sd35_fp8_layer = layer


def weight_adapters(layer):
    """The functions other than ComfyUI's patches that the layer's weight goes through
    (ModelPatcher.add_weight_wrapper: LoRA training's adapters, every version). ComfyUI hands them a
    layer's weight in the compute dtype: they take the dequantized weight, never the stored fp8 one."""
    functions = layer.weight_function
    if not functions:
        return ()
    return [f for f in functions if not isinstance(f, comfy.model_patcher.LowVramPatch)]


def _beside(patch):
    return isinstance(patch, ScaledLowVramPatch) and patch.side_path() is not None


@contextmanager
def _side_paths_hidden(layer):
    """Keeps patches whose LoRA already rides beside the weight out of ComfyUI's sight while it casts:
    it would otherwise copy the weight for them on every call (every version) and, under 0.33's
    DynamicVRAM, widen each faulted weight, call the patch and stochastically round it back, for a
    weight the side path leaves unchanged. Weight adapters too: the cast hands out the stored fp8 weight,
    which they cannot take (weight_adapters)."""
    lowvram = _lowvram_function(layer)
    functions = layer.weight_function
    hide_lowvram = _beside(lowvram)
    kept = [f for f in functions if isinstance(f, comfy.model_patcher.LowVramPatch) and not _beside(f)]
    if not hide_lowvram and len(kept) == len(functions):
        yield
        return
    # nn.Module.__setattr__ looks for parameters, buffers and submodules of the name first: on an H200
    # host its four calls here cost 17 us of a LoRA'd layer's 304 us call, and about half of the 18 us
    # of isinstance checks (bench/results/diag_host_cost_033_seventh.json). These attributes are none of those.
    # Traced by torch.compile, the plain setattr that Dynamo knows.
    set_attribute = setattr if torch.compiler.is_compiling() else _set_instance_attribute
    if hide_lowvram:
        set_attribute(layer, "weight_lowvram_function", None)
    set_attribute(layer, "weight_function", kept)
    try:
        yield
    finally:
        if hide_lowvram:
            set_attribute(layer, "weight_lowvram_function", lowvram)
        set_attribute(layer, "weight_function", functions)


def _set_instance_attribute(layer, name, value):
    layer.__dict__[name] = value


def cast_stored_weight(layer, input):
    """(weight: the stored fp8 tensor on input's device, with merged into it only a LoRA that cannot
    stay beside it; bias in input's dtype; offload state for comfy.ops.uncast_bias_weight)."""
    as_stored = _as_stored(layer, input)
    if as_stored is not None:
        return (*as_stored, None)
    _own_lowvram_patches(layer)
    requant = {"compute_dtype": input.dtype, "want_requant": True} if _CAST_REQUANT_ARGS else {}
    with _side_paths_hidden(layer):
        return cast_bias_weight(layer, input, dtype=layer.weight.dtype, bias_dtype=input.dtype, offloadable=True,
                                **requant)


def _as_stored(layer, input):
    """(the stored weight, the bias in input's dtype) where ComfyUI's cast would hand back just that, with
    nothing to undo (every version): eager, both on input's device, no patch applied per call, not staged
    by 0.33's DynamicVRAM (its `_v`); None elsewhere. Its cast costs host time on every call of every
    layer even then (ComfyUI 0.33 on an H200's host: 10.5 us of ours' 92.7 us a call,
    bench/results/host_cost_033.json), and eager steps of ours are bound by the host."""
    weight, bias = layer.weight, layer.bias
    if (torch.compiler.is_compiling() or weight.device != input.device
            or (bias is not None and bias.device != input.device) or layer.weight_function
            or layer.bias_function or "_v" in layer.__dict__ or _lowvram_function(layer) is not None):
        return None
    return weight, None if bias is None else bias.to(input.dtype)


def call_patches(layer, weight, rows):
    """(the low-rank LoRA of this call (quant.low_rank.LowRank) or None, the scale of the FP8 weight it
    computes with: the layer's, or a merged LoRA's own); weight: what cast_stored_weight returned; rows: the
    call's rows (ScaledLowVramPatch.low_rank)."""
    low_rank = getattr(layer.weight, "sd35_low_rank", None)
    scale = getattr(layer.weight, "sd35_weight_scale", None)
    if low_rank is None and scale is None:
        for patch in (*layer.weight_function, _lowvram_function(layer)):
            if isinstance(patch, ScaledLowVramPatch):
                low_rank, scale = patch.low_rank(weight, rows), patch.merged_scale(weight)
                break
        else:
            _forget_side_path(layer)
    # rank 0: a LoRA that leaves the layer as it is (LoraLoader's model strength 0 beside a CLIP strength, an
    # adapter of zeros), found and kept like any other so that ComfyUI's cast leaves the weight alone
    return (None if low_rank is None or low_rank.up.shape[1] == 0 else low_rank,
            layer.weight_scale if scale is None else scale)


def _forget_side_path(layer):
    """A layer called without a LoRA lets go of the side path it kept for its last one
    (ScaledLowVramPatch.low_rank). Kept, the side paths of a removed LoRA held VRAM that DynamicVRAM's
    8 GiB cap then lacked: on an H100, 15 more of SD3.5 Large's weights staged per step and 4.6% more GPU
    time than before the LoRA was added; let go here, 9 more and 2.4% (bench/analysis_lora.md, fortieth
    session), before the patch objects stopped holding them too."""
    if not torch.compiler.is_compiling() and "sd35_side_path_found" in layer.__dict__:
        del layer.__dict__["sd35_side_path_found"]


def keep_stored_dtype(layer):
    """0.33 (DynamicVRAM) stages a weight in VRAM in the dtype it archived when the model was built,
    before the fp8 weights were loaded: without this it would hold (and hand out) the unscaled fp8
    values widened to the compute dtype, twice the memory, and a LoRA would come back in that dtype."""
    layer.weight_comfy_model_dtype = layer.weight.dtype


def build_diffusion_model(state_dict, model_options, disable_dynamic=False):
    """ComfyUI's ModelPatcher over the diffusion model in state_dict; disable_dynamic (0.33): a plain
    ModelPatcher even where DynamicVRAM is on."""
    outside = {"disable_dynamic": disable_dynamic} if _BUILDS_OUTSIDE_DYNAMIC_VRAM else {}
    return comfy.sd.load_diffusion_model_state_dict(state_dict, model_options=model_options, **outside)


def build_text_encoders(state_dicts, model_options, disable_dynamic=False, **options):
    """ComfyUI's CLIP over the text encoders in state_dicts (comfy.sd.load_text_encoder_state_dicts's
    options); disable_dynamic as for build_diffusion_model."""
    outside = {"disable_dynamic": disable_dynamic} if _BUILDS_OUTSIDE_DYNAMIC_VRAM else {}
    return comfy.sd.load_text_encoder_state_dicts(state_dicts, model_options=model_options, **options, **outside)


def register_reload(model_patcher, reload, arguments):
    """Tells ComfyUI how to load this model (a MODEL, or a CLIP's patcher) again, as its own loaders do:
    0.33 calls reload(*arguments, disable_dynamic=True) where it needs the model outside DynamicVRAM
    (TorchCompileModel, conditioning hooks, a copy for another device) and raises for a model without
    it; 0.3.x never asks."""
    model_patcher.cached_patcher_init = (reload, arguments)


def clone_for_compile(model_patcher):
    """The copy stock TorchCompileModel compiles: 0.33, a copy outside DynamicVRAM, whose weights stay
    where they are loaded (built again through the loader's reload, register_reload); 0.3.x, a clone."""
    if _BUILDS_OUTSIDE_DYNAMIC_VRAM:
        return model_patcher.clone(disable_dynamic=True)
    return model_patcher.clone()


def stock_compile_options():
    """The torch.compile options stock TorchCompileModel passes: 0.33 leaves transformer_options out of
    the guards (its skip_torch_compile_dict), 0.3.x passes none."""
    from comfy_extras import nodes_torch_compile
    guard_filter = getattr(nodes_torch_compile, "skip_torch_compile_dict", None)
    return {"guard_filter_fn": guard_filter} if guard_filter is not None else {}
