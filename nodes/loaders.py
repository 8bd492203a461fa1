"""Loader nodes: SD3.5 checkpoints and diffusion models, quantized to FP8 while loading."""

import folder_paths

from ..quant.policy import DEFAULT_POLICY, POLICIES
from .missing_part import MissingPart
from .model_loading import load_mmdit, load_vae, open_sd35_file, resolve_model_file
from .text_encoder_loading import CHECKPOINT_TEXT_ENCODER_OPTIONS, load_checkpoint_text_encoders

CATEGORY = "loaders/SD3.5 FP8"
POLICY_INPUT = (list(POLICIES), {"default": DEFAULT_POLICY, "tooltip": "\n".join(
    f"{p.name}: {p.description}" for p in POLICIES.values())})

COMPUTE_INPUT = (["auto", "weight_only"], {"default": "auto", "tooltip":
                 "auto: FP8 tensor-core matmuls where the GPU has them (compute capability 8.9+: "
                 "Ada, Hopper, Blackwell), weight-only FP8 elsewhere. weight_only: always dequantize "
                 "the weights and multiply in the compute dtype."})

ATTENTION_INPUT = (["fp8", "bf16"], {"default": "fp8", "tooltip":
                   "fp8: the attention's two products (QK^T and PV) in FP8 with an fp32 softmax, on GPUs with "
                   "FP8 tensor cores (compute capability 8.9+) and Triton; elsewhere bf16. On an H200 0.76 ms a "
                   "Large attention layer against 0.90 for cuDNN's bf16 kernel. bf16: torch's attention as stock "
                   "ComfyUI runs it."})

TEXT_ENCODERS_INPUT = (list(CHECKPOINT_TEXT_ENCODER_OPTIONS), {"default": "as stored", "tooltip":
                       "The checkpoint's own text encoders, when it has them: as stored; drop T5 (T5-XXL is "
                       "never read: about 9.5 GB less in fp16); or T5 in FP8 (quantized on load, about half)."})


class SD35FP8CheckpointLoader:
    DESCRIPTION = ("Loads an SD3.5 single-file checkpoint (Large, Large Turbo, Medium) and stores its "
                   "MMDiT in FP8 with per-channel scales; the final layer and embedders stay in the "
                   "compute dtype. Text encoders and VAE come from the file when it has them (CLIP and VAE "
                   "from a file without them fail where they are used, saying what to connect). FP8 files "
                   "(this pack's, ComfyUI's) load as stored, without quantizing again.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"ckpt_name": (folder_paths.get_filename_list("checkpoints"),),
                             "policy": POLICY_INPUT, "compute": COMPUTE_INPUT},
                "optional": {"text_encoders": TEXT_ENCODERS_INPUT, "attention": ATTENTION_INPUT}}

    def load(self, ckpt_name, policy, compute="auto", text_encoders="as stored", attention="fp8"):
        header, contents = open_sd35_file(resolve_model_file("checkpoints", ckpt_name))
        model = load_mmdit(header, contents, POLICIES[policy], force_weight_only=compute == "weight_only",
                           fp8_attention=attention == "fp8")
        # Like stock CheckpointLoaderSimple: every part the file has, whichever outputs are connected.
        clip = load_checkpoint_text_encoders(header, contents, text_encoders)
        vae = load_vae(header, contents) if contents.vae_keys else MissingPart(
            f"{ckpt_name} has no VAE. Take the VAE from a Load VAE node with an SD3 VAE file in "
            "models/vae instead of Load SD3.5 Checkpoint (FP8)'s VAE output.")
        return model, clip, vae


class SD35FP8DiffusionModelLoader:
    DESCRIPTION = ("Loads an SD3.5 MMDiT from models/diffusion_models (or a full checkpoint placed "
                   "there) and stores it in FP8 with per-channel scales. Also reads diffusers transformers "
                   "(pick any shard of a sharded folder) and FP8 files from this pack, ComfyUI and "
                   "optimum-quanto, taking their FP8 layers as stored.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"unet_name": (folder_paths.get_filename_list("diffusion_models"),),
                             "policy": POLICY_INPUT, "compute": COMPUTE_INPUT},
                "optional": {"attention": ATTENTION_INPUT}}

    def load(self, unet_name, policy, compute="auto", attention="fp8"):
        header, contents = open_sd35_file(resolve_model_file("diffusion_models", unet_name))
        model = load_mmdit(header, contents, POLICIES[policy], force_weight_only=compute == "weight_only",
                           fp8_attention=attention == "fp8")
        return (model,)


NODE_CLASS_MAPPINGS = {
    "SD35FP8CheckpointLoader": SD35FP8CheckpointLoader,
    "SD35FP8DiffusionModelLoader": SD35FP8DiffusionModelLoader,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "SD35FP8CheckpointLoader": "Load SD3.5 Checkpoint (FP8)",
    "SD35FP8DiffusionModelLoader": "Load SD3.5 Diffusion Model (FP8)",
}
