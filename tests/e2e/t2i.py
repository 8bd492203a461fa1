"""The SD3.5 text-to-image graph in API format, and the check on the image it saves."""
import numpy as np
from PIL import Image

POLICIES = ("fp8_default", "fp8_keep_adaln", "off")


def node(class_type, **inputs):
    return {"class_type": class_type, "inputs": inputs}


def t2i_prompt(loaders, model, clip, vae, seed=0, size=64, steps=4, prefix="e2e"):
    """loaders: {node_id: node} giving model, clip and vae, which are [node_id, output_index]."""
    return {
        **loaders,
        "shift": node("ModelSamplingSD3", model=model, shift=3.0),
        "positive": node("CLIPTextEncode", clip=clip, text="a red fox in the snow"),
        "negative": node("CLIPTextEncode", clip=clip, text=""),
        "latent": node("EmptySD3LatentImage", width=size, height=size, batch_size=1),
        "sampler": node("KSampler", model=["shift", 0], positive=["positive", 0], negative=["negative", 0],
                        latent_image=["latent", 0], seed=seed, steps=steps, cfg=4.5, sampler_name="euler",
                        scheduler="sgm_uniform", denoise=1.0),
        "decode": node("VAEDecode", samples=["sampler", 0], vae=vae),
        "save": node("SaveImage", images=["decode", 0], filename_prefix=prefix),
    }


def checkpoint_prompt(ckpt_name, policy="fp8_default", compute="auto", seed=0, prefix="e2e"):
    """MODEL, CLIP and VAE all from our checkpoint loader."""
    loaders = {"ckpt": node("SD35FP8CheckpointLoader", ckpt_name=ckpt_name, policy=policy, compute=compute)}
    return t2i_prompt(loaders, ["ckpt", 0], ["ckpt", 1], ["ckpt", 2], seed, prefix=prefix)


def stock_clip_prompt(ckpt_name, clip_name, policy="fp8_default", seed=0, prefix="e2e"):
    """MODEL and VAE from our checkpoint loader (its CLIP output unconnected), CLIP from a stock
    CLIPLoader."""
    loaders = {"ckpt": node("SD35FP8CheckpointLoader", ckpt_name=ckpt_name, policy=policy, compute="auto"),
               "clip": node("CLIPLoader", clip_name=clip_name, type="sd3")}
    return t2i_prompt(loaders, ["ckpt", 0], ["clip", 0], ["ckpt", 2], seed, prefix=prefix)


def separate_files_prompt(unet_name, clip_name, vae_name, policy="fp8_default", seed=0, prefix="e2e"):
    """Our diffusion-model loader with a stock CLIPLoader and VAELoader, as for SD3.5 Medium's
    separate files."""
    loaders = {"unet": node("SD35FP8DiffusionModelLoader", unet_name=unet_name, policy=policy,
                            compute="auto"),
               "clip": node("CLIPLoader", clip_name=clip_name, type="sd3"),
               "vae": node("VAELoader", vae_name=vae_name)}
    return t2i_prompt(loaders, ["unet", 0], ["clip", 0], ["vae", 0], seed, prefix=prefix)


def assert_image(path, size):
    image = Image.open(path)
    assert image.format == "PNG" and image.size == (size, size), (image.format, image.size)
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    assert pixels.std() > 1.0, f"{path} is a constant image"
