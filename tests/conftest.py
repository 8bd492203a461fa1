import os
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from devtools import tiny_sd3
from devtools.comfy_host import host_env
from devtools.comfy_server import ComfyServer, make_base


@pytest.fixture(scope="session")
def comfy_base(tmp_path_factory):
    return make_base(tmp_path_factory.mktemp("comfy_base"))


@pytest.fixture(scope="session")
def comfy(comfy_base):
    """A real ComfyUI server (CPU) with this pack installed, shared by the session's e2e tests."""
    env = host_env()
    server = ComfyServer(env["SD35FP8_PYTHON"], env["SD35FP8_COMFYUI"], comfy_base, comfy_base / "server.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def clip_g_path(tmp_path_factory):
    """Real-size CLIP-G (695M parameters, 1.4 GB; ComfyUI fixes its shapes), written once a
    session and linked into the folders that need it."""
    path = tmp_path_factory.mktemp("clip_g") / "clip_g.safetensors"
    save_file(tiny_sd3.clip_state_dict("clip_g", seed=int(torch.randint(0, 10**6, ()))), path)
    return path


@pytest.fixture(scope="session")
def tiny_models(comfy_base, clip_g_path):
    """Tiny SD3.5 files in the server's model folders; the attributes are the names the loaders take.
    CLIP-L and CLIP-G are real size under their official names, which the shipped workflows use."""
    models = comfy_base / "models"
    names = SimpleNamespace(large="tiny_sd35_large.safetensors",
                            large_no_te="tiny_sd35_large_no_te.safetensors",
                            medium="tiny_sd35_medium.safetensors", clip_l="clip_l.safetensors",
                            clip_g="clip_g.safetensors",
                            vae="tiny_taesd3.safetensors")
    tiny_sd3.write_checkpoint(models / "checkpoints" / names.large)
    tiny_sd3.write_checkpoint(models / "checkpoints" / names.large_no_te, clip_l=False)
    tiny_sd3.write_diffusion_model(models / "diffusion_models" / names.medium, variant="medium")
    save_file(tiny_sd3.clip_state_dict("clip_l"), models / "text_encoders" / names.clip_l)
    os.link(clip_g_path, models / "text_encoders" / names.clip_g)
    save_file(tiny_sd3.taesd_vae_state_dict(prefix=""), models / "vae" / names.vae)
    return names


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    server = item.funcargs.get("comfy") if hasattr(item, "funcargs") else None
    if report.failed and server is not None:
        report.sections.append((f"ComfyUI server log (tail of {server.log_path})", server.log_tail()))
    return report
