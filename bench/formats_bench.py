"""Load time of a pre-quantized file against quantizing on load, and the converter's peak memory,
on real-size random-weight SD3.5 files (CPU; files in /tmp, never in the repo).

    python bench/formats_bench.py --out bench/results/formats.json [--work /tmp/sd35_formats] [--large]

Every measurement runs in a fresh process (its own peak RSS); files are read from the page cache
(each is read once before it is timed), so the figures are the loader's work, not the disk's.
"""
import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import pack_import  # noqa: E402,F401  (the pack as `sd35_fp8`)


def child(*args):
    """Runs this script in a fresh process; returns the JSON it prints last."""
    result = subprocess.run([sys.executable, __file__, *map(str, args)], cwd=REPO, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(result.stderr[-4000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def cpu_name():
    with open("/proc/cpuinfo") as f:
        return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), platform.machine())


def peak_rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def do_write(model, path):
    from devtools.real_size import write_random_mmdit
    start = time.perf_counter()
    size = write_random_mmdit(path, model)
    print(json.dumps({"bytes": size, "s": round(time.perf_counter() - start, 1)}))


def do_convert(source, target, granularity):
    from sd35_fp8.quant.__main__ import main
    start = time.perf_counter()
    assert main([source, target, "--granularity", granularity, "--overwrite"]) == 0
    print(json.dumps({"s": round(time.perf_counter() - start, 1), "peak_rss_gib": round(peak_rss_gib(), 2),
                      "bytes": os.path.getsize(target)}))


def do_load(path, loader):
    from devtools.comfy_host import import_comfy_in_process
    pack = import_comfy_in_process()
    import folder_paths
    import nodes
    folder_paths.add_model_folder_path("diffusion_models", os.path.dirname(path), is_default=True)
    with open(path, "rb") as f:  # into the page cache, so the timing is the loader's own work
        while f.read(64 << 20):
            pass
    start = time.perf_counter()
    if loader == "stock":
        nodes.UNETLoader().load_unet(os.path.basename(path), "default")
    else:
        pack.NODE_CLASS_MAPPINGS["SD35FP8DiffusionModelLoader"]().load(os.path.basename(path), "fp8_default")
    print(json.dumps({"s": round(time.perf_counter() - start, 2), "peak_rss_gib": round(peak_rss_gib(), 2)}))


def load_times(path, loader, repeats):
    runs = [child("load", path, loader) for _ in range(repeats)]
    return {"median_s": statistics.median(r["s"] for r in runs), "runs_s": [r["s"] for r in runs],
            "peak_rss_gib": max(r["peak_rss_gib"] for r in runs)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--work", default="/tmp/sd35_formats")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--large", action="store_true", help="also convert a full 16 GB SD3.5 Large file")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    import torch
    results = {"device": f"CPU: {cpu_name()}, {os.cpu_count()} cores, no GPU", "torch": torch.__version__,
               "python": platform.python_version(), "command": " ".join(sys.argv)}

    bf16, channel, tensor = work / "medium_bf16.safetensors", work / "medium_fp8.safetensors", work / "medium_fp8_pt.safetensors"
    results["medium_bf16_file"] = child("write", "medium", bf16)
    results["convert_medium_per_channel"] = child("convert", bf16, channel, "per_channel")
    results["convert_medium_per_tensor"] = child("convert", bf16, tensor, "per_tensor")
    results["load_medium"] = {
        "ours, bf16 file (quantized on load)": load_times(bf16, "ours", args.repeats),
        "ours, our per-channel fp8 file (as stored)": load_times(channel, "ours", args.repeats),
        "ours, our per-tensor fp8 file (as stored)": load_times(tensor, "ours", args.repeats),
        "stock UNETLoader, our per-tensor fp8 file": load_times(tensor, "stock", args.repeats),
    }
    for path in (bf16, channel, tensor):
        path.unlink()
    if args.large:
        large, large_fp8 = work / "large_bf16.safetensors", work / "large_fp8.safetensors"
        results["large_bf16_file"] = child("write", "large", large)
        results["convert_large_per_channel"] = child("convert", large, large_fp8, "per_channel")
    shutil.rmtree(work, ignore_errors=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("write", "convert", "load"):
        {"write": do_write, "convert": do_convert, "load": do_load}[sys.argv[1]](*sys.argv[2:])
    else:
        main()
