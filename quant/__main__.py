"""The converter's command line. Users run it as `python <pack>/convert_to_fp8.py IN OUT` from any
working directory (that script imports the pack as `sd35_fp8`, pack_import.py). Needs torch and
safetensors only."""
import argparse
import os
import sys
import time

from .convert import convert
from .errors import SD35FP8Error
from .policy import DEFAULT_POLICY, POLICIES
from .scales import GRANULARITIES, PER_CHANNEL


def main(argv=None, prog="convert_to_fp8.py"):
    parser = argparse.ArgumentParser(
        prog=prog, description="Quantizes an SD3.5 model once into an FP8 .safetensors file (ComfyUI's "
        "mixed-precision layout), without ComfyUI, from any SD3.5 file this pack reads: bf16/fp16/fp32, ComfyUI "
        "fp8 (scaled_fp8, _quantization_metadata, comfy_quant), optimum-quanto, diffusers (one file, a sharded "
        "folder, its index or a shard).")
    parser.add_argument("source", help="the model file, or a diffusers transformer folder / index / shard")
    parser.add_argument("target", help="the .safetensors file to write (put it in models/diffusion_models, or "
                                       "models/checkpoints when the source has text encoders or a VAE)")
    parser.add_argument("--policy", choices=list(POLICIES), default=DEFAULT_POLICY,
                        help="; ".join(f"{p.name}: {p.description}" for p in POLICIES.values()))
    parser.add_argument("--granularity", choices=GRANULARITIES, default=PER_CHANNEL,
                        help="per_channel: more accurate, read by this pack only; per_tensor: requantized to "
                             "one scale per tensor, stock ComfyUI loads it too")
    parser.add_argument("--overwrite", action="store_true", help="replace the target if it exists (never the source)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        report = convert(args.source, args.target, POLICIES[args.policy], args.granularity, args.overwrite)
    except SD35FP8Error as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.target}: {report.summary(os.path.basename(args.source))}; "
          f"{time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
