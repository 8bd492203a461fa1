"""The ComfyUI host for tests: where scripts/setup_host.sh put it, imported in-process on demand."""
import os
import subprocess
import sys
from pathlib import Path

import pack_import

REPO = Path(__file__).resolve().parent.parent


def host_env():
    """SD35FP8_PYTHON, SD35FP8_COMFYUI, SD35FP8_BASE from .host/env, running the setup if needed."""
    env_file = Path(os.environ.get("SD35FP8_HOST", REPO / ".host")) / "env"
    if not env_file.exists():
        subprocess.run(["bash", str(REPO / "scripts" / "setup_host.sh")], check=True)
    values = {}
    for line in env_file.read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        values[key] = value
    return values


class DynamicVRAMUnavailable(RuntimeError):
    pass


def import_comfy_in_process(dynamic_vram=False, reserve_vram_gib=None):
    """Puts ComfyUI first on sys.path (its `nodes` module must win over this repo's `nodes/`),
    then imports the pack as `sd35_fp8`, the package ComfyUI makes of its custom_nodes folder.

    reserve_vram_gib: ComfyUI's --reserve-vram. dynamic_vram: turn DynamicVRAM on as ComfyUI 0.33's
    main.py does on a GPU (its default there); call before anything imports comfy.model_management."""
    env = host_env()
    comfy_dir = env["SD35FP8_COMFYUI"]
    if dynamic_vram and not (Path(comfy_dir) / "comfy" / "memory_management.py").exists():
        raise DynamicVRAMUnavailable(f"ComfyUI at {comfy_dir} has no DynamicVRAM (it exists from ComfyUI 0.33)")
    if comfy_dir in sys.path:
        sys.path.remove(comfy_dir)
    sys.path.insert(0, comfy_dir)
    if "nodes" in sys.modules and not hasattr(sys.modules["nodes"], "NODE_CLASS_MAPPINGS"):
        del sys.modules["nodes"]
    import torch
    import comfy.options
    comfy.options.enable_args_parsing(False)
    from comfy.cli_args import args
    args.reserve_vram = reserve_vram_gib
    if dynamic_vram:
        # main.py loads comfy-aimdo's library before anything initialises CUDA.
        import comfy_aimdo.control
        headroom = None if reserve_vram_gib is None else int(reserve_vram_gib * 1024 ** 3)
        comfy_aimdo.control.init(simple_vram_headroom=headroom, nvml_pressure=not args.disable_nvml_pressure)
    args.cpu = not torch.cuda.is_available()
    if dynamic_vram:
        _enable_dynamic_vram(args)
    pack = pack_import.import_pack()
    if not pack.NODE_CLASS_MAPPINGS:  # imported before ComfyUI was importable (by the engine's tests)
        pack.__spec__.loader.exec_module(pack)
    return pack


def _enable_dynamic_vram(args):
    """The rest of main.py's order: ComfyUI's memory modules, comfy-aimdo's devices and log level, and the
    dynamic ModelPatcher as the one every loader builds."""
    import comfy_aimdo.control
    import comfy.memory_management
    import comfy.model_management
    import comfy.model_patcher
    devices = ((device.index, int(args.vram_headroom * 1024 ** 3))
               for device in comfy.model_management.get_all_torch_devices())
    if not comfy_aimdo.control.init_devices(devices):
        raise RuntimeError("comfy-aimdo could not start on this GPU: DynamicVRAM cannot be turned on")
    # As main.py at its default console level (INFO). Left at the library's own level, comfy-aimdo called back
    # into Python's logging three times per staged layer, its debug traces: 1158 calls a step of SD3.5 Large,
    # about 4 ms of host time as cProfile counts it
    # (bench/results/diag_lora_033_DynamicVRAM_h100_hostprof33_branch.json).
    comfy_aimdo.control.set_log_info()
    comfy.model_patcher.CoreModelPatcher = comfy.model_patcher.ModelPatcherDynamic
    comfy.memory_management.aimdo_enabled = True


def after_node():
    """What ComfyUI's executor does after every node while DynamicVRAM is on (0.33 execution.py):
    empties the cast buffers and torch's cache, drops the prefetch queues and resets comfy-aimdo's
    watermark limits, which memory pressure during the node lowered. In-process runs call it
    between samplings as a server would between prompts; nothing to do without DynamicVRAM."""
    memory_management = sys.modules.get("comfy.memory_management")  # 0.33 and later
    if memory_management is None or not memory_management.aimdo_enabled:
        return
    import comfy.model_management
    import comfy.model_prefetch
    import comfy_aimdo.model_vbar
    comfy.model_management.reset_cast_buffers()
    comfy.model_prefetch.cleanup_prefetch_queues()
    comfy_aimdo.model_vbar.vbars_reset_watermark_limits()
