"""FP8 against full precision as pictures, on random weights at the real shapes: stock ComfyUI's
default (bf16/fp16) and this pack's fp8_default (compute auto) sample from the same seed, noise
and conditioning; each final latent becomes a picture through ComfyUI's own latent preview
projection (the SD3 latent_rgb_factors of comfy/latent_formats.py, as Latent2RGBPreviewer draws the
live preview: one RGB pixel per latent pixel). No real VAE weights exist here, and a random-weight
VAE would be a second random network between the latents and the numbers. Random weights give
latents far outside the range the preview expects, and clamping would hide differences: one
affine map, taken from the stock picture alone (its minimum to 0, its maximum to 1), applies to
both, so PSNR is relative to the stock picture's full range. PSNR and SSIM come from the functions
of the Compare Images node, beside the latent error of bench/sd35_bench.py.

  python bench/image_compare.py --out bench/results            # GPU: Large and Medium, Gaussian and heavy-tailed
  python bench/image_compare.py --models tiny --size 256 --out /tmp/image_compare   # CPU smoke test

Writes image_compare.json and one comparison PNG per case to --out; bench/report.py puts the table
in bench/RESULTS.md.
"""
import argparse
import gc
import json
import platform
import sys
import time
from pathlib import Path

import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import pack_import  # noqa: E402,F401  (the pack as `sd35_fp8`)
from bench.sd35_bench import CFG, MODELS, SAMPLER, build, conditioning, random_weights, sample  # noqa: E402
from devtools.comfy_host import import_comfy_in_process  # noqa: E402
from devtools.numerics import relative_error  # noqa: E402
from sd35_fp8.quant.reports.compare_picture import comparison_pictures  # noqa: E402
from sd35_fp8.quant.reports.image_metrics import compare_images  # noqa: E402

REFERENCE, CANDIDATE = "stock_default", "ours_fp8"
LABELS = {REFERENCE: "stock default", CANDIDATE: "ours FP8 (fp8_default)"}


def latent_previews(reference, candidate):
    """(1, 16, h, w) latents as comfy.sample.sample returns them -> (1, h, w, 3) pictures in 0..1,
    both through the same projection and the same range (the reference's), and the fraction of the
    candidate's values outside that range (clamped)."""
    from comfy.latent_formats import SD3
    latent_format = SD3()
    factors = torch.tensor(latent_format.latent_rgb_factors).t()
    bias = torch.tensor(latent_format.latent_rgb_factors_bias)
    # the previewer sees the model-space x0, before process_out
    reference_rgb, candidate_rgb = (torch.nn.functional.linear(latent_format.process_in(latent.float()).movedim(1, -1),
                                                               factors, bias) for latent in (reference, candidate))
    low, high = reference_rgb.min(), reference_rgb.max()
    candidate_image = (candidate_rgb - low) / (high - low)
    clipped = float(((candidate_image < 0) | (candidate_image > 1)).float().mean())
    return (reference_rgb - low) / (high - low), candidate_image.clamp(0, 1), clipped


def sample_variant(variant, weights, args, positive, negative):
    import comfy.model_management
    comfy.model_management.unload_all_models()
    gc.collect()
    comfy.model_management.soft_empty_cache()
    model = build(variant, weights)
    started = time.perf_counter()
    latent = sample(model, args.size, args.steps, args.seed, positive, negative, [])
    return latent, {"dtype": str(model.model.get_dtype()).replace("torch.", ""),
                    "sample_s": round(time.perf_counter() - started, 2)}


def one_case(model_key, weights_kind, args, device):
    started = time.perf_counter()
    weights = random_weights(model_key, weights_kind, args.seed, device)
    positive, negative = conditioning(args.seed)
    latents, details = {}, {}
    for variant in (REFERENCE, CANDIDATE):
        latents[variant], details[variant] = sample_variant(variant, weights, args, positive, negative)
    del weights
    reference, candidate, clipped = latent_previews(latents[REFERENCE], latents[CANDIDATE])
    comparison = compare_images(reference, candidate)
    picture_name = f"image_compare_{model_key}_{weights_kind}.png"
    [picture] = comparison_pictures(reference, candidate, comparison, f"{LABELS[REFERENCE]} ({details[REFERENCE]['dtype']})",
                                    LABELS[CANDIDATE])
    Image.fromarray(picture).save(args.out / picture_name)
    result = {"model": MODELS[model_key]["name"], "weights": weights_kind,
              "latent_error": round(relative_error(latents[CANDIDATE], latents[REFERENCE]), 4),
              "psnr_db": round(comparison.psnr_db[0], 2), "ssim": round(comparison.ssim[0], 4),
              "preview_size": list(reference.shape[1:3]),
              "candidate_clipped_fraction": round(clipped, 5),
              "variants": details, "picture": picture_name, "case_s": round(time.perf_counter() - started, 1)}
    print(json.dumps(result), flush=True)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=["large", "medium"])
    parser.add_argument("--weights", nargs="+", choices=("gaussian", "heavy"), default=["gaussian", "heavy"])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()

    import_comfy_in_process()
    import comfyui_version
    args.out.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    run = {"size": args.size, "steps": args.steps, "cfg": CFG, "sampler": SAMPLER, "seed": args.seed,
           "device": torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or "cpu",
           "torch": torch.__version__, "comfyui": comfyui_version.__version__, "python": platform.python_version(),
           "command": " ".join(["python"] + sys.argv), "reference": LABELS[REFERENCE], "candidate": LABELS[CANDIDATE],
           "results": [one_case(m, w, args, device) for m in args.models for w in args.weights]}
    (args.out / "image_compare.json").write_text(json.dumps(run, indent=1))
    print("wrote", args.out / "image_compare.json")


if __name__ == "__main__":
    main()
