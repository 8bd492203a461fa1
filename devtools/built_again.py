"""The copy of a model that ComfyUI 0.33 builds again through its loader's reload factory
(ModelPatcher.cached_patcher_init), as TorchCompileModel, conditioning hooks and multi-GPU copies do
outside DynamicVRAM: `clone(force_deepcopy=True)` takes that path on any device. For tests."""
import inspect

import pytest


def built_again(patcher):
    """patcher's copy built again by its loader; skips the test where ComfyUI never does that (0.3.x)."""
    if "force_deepcopy" not in inspect.signature(patcher.clone).parameters:
        pytest.skip("this ComfyUI never loads a model again (0.33 does)")
    return patcher.clone(force_deepcopy=True)
