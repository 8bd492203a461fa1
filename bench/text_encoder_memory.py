"""Resident memory of SD3.5's text-encoder sets (full fp16, no T5, T5 in FP8), each built by our
preset node from real-size random-weight files, in its own process.

  python bench/text_encoder_memory.py --files /tmp/sd35_text_encoders --out bench/results

Writes CLIP-L (123M parameters), CLIP-G (695M) and T5-XXL (4.76B, 9.5 GB in fp16, written tensor
by tensor) once, then per set: the CLIP patcher's model_size (real storage), peak RSS (file pages
read through the memory map included) and peak anonymous memory, load and encode seconds. The T5
FP8 set's conditioning is compared with the full set's.
"""
import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import pack_import  # noqa: E402,F401  (the pack as `sd35_fp8`)
from devtools.numerics import relative_error  # noqa: E402
from devtools.tiny_sd3 import clip_state_dict  # noqa: E402
from devtools.tiny_text_encoders import T5XXL, write_t5  # noqa: E402
from sd35_fp8.quant.reports.report import GIB  # noqa: E402

FILES = {"clip_l": "clip_l.safetensors", "clip_g": "clip_g.safetensors", "t5xxl": "t5xxl_fp16.safetensors"}
SETS = {"full fp16": "full (L+G+T5)", "no T5": "no T5 (L+G)", "T5 FP8": "T5 in FP8"}
PROMPT = "a photograph of a red fox standing in fresh snow at dawn, soft light"


def write_files(folder):
    folder.mkdir(parents=True, exist_ok=True)
    for encoder, name in FILES.items():
        path = folder / name
        if path.exists():
            continue
        started = time.perf_counter()
        if encoder == "t5xxl":
            write_t5(path, T5XXL, seed=5)
        else:
            save_file(clip_state_dict(encoder, seed=1), str(path.with_suffix(".partial")))
            path.with_suffix(".partial").rename(path)
        print(f"wrote {path} ({path.stat().st_size / GIB:.2f} GiB) in {time.perf_counter() - started:.0f} s", flush=True)


class PeakAnonymousMemory:
    """Polls RssAnon: memory the process really holds, unlike file pages mapped from the model files."""

    def __init__(self, interval=0.02):
        self.peak, self.interval, self.running = 0, interval, True
        self.thread = threading.Thread(target=self.poll, daemon=True)
        self.thread.start()

    def poll(self):
        while self.running:
            self.peak = max(self.peak, anonymous_bytes())
            time.sleep(self.interval)

    def stop(self):
        self.running = False
        self.thread.join()
        return self.peak


def anonymous_bytes():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("RssAnon:"))


def measure_set(set_name, folder, cond_path):
    """Runs in a child process: one set, built by the preset node as a user's prompt would."""
    from devtools.comfy_host import import_comfy_in_process
    pack = import_comfy_in_process()
    import comfy.model_management
    import comfyui_version
    import folder_paths
    import nodes
    folder_paths.add_model_folder_path("text_encoders", str(folder), is_default=True)
    baseline_anonymous = anonymous_bytes()
    anonymous = PeakAnonymousMemory()
    started = time.perf_counter()
    (clip,) = pack.NODE_CLASS_MAPPINGS["SD35FP8TextEncoderPreset"]().load(
        SETS[set_name], FILES["clip_l"], FILES["clip_g"], FILES["t5xxl"])
    load_s = time.perf_counter() - started
    peak_rss_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    peak_anonymous_load = anonymous.stop()
    per_encoder = {e: comfy.model_management.module_size(m) for e in FILES
                   if (m := getattr(clip.cond_stage_model, e)) is not None}
    started = time.perf_counter()
    ((cond, extra),) = nodes.CLIPTextEncode().encode(clip, PROMPT)[0]
    encode_s = time.perf_counter() - started
    torch.save({"cond": cond, "pooled": extra["pooled_output"]}, cond_path)
    return {"set": set_name, "preset": SETS[set_name], "model_size_bytes": clip.patcher.model_size(),
            "per_encoder_bytes": per_encoder, "load_s": load_s, "encode_s": encode_s,
            "baseline_anonymous_bytes": baseline_anonymous, "peak_anonymous_load_bytes": peak_anonymous_load,
            "peak_rss_load_bytes": peak_rss_load,
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "cond_shape": list(cond.shape), "comfyui": comfyui_version.__version__}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=Path, default=Path("/tmp/sd35_text_encoders"))
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--child", choices=list(SETS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure_set(args.child, args.files, args.files / f"cond_{args.child}.pt")), flush=True)
        return
    write_files(args.files)
    results = []
    for set_name in SETS:
        child = subprocess.run([sys.executable, __file__, "--files", str(args.files), "--child", set_name],
                               capture_output=True, text=True, check=True)
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    conds = {s: torch.load(args.files / f"cond_{s}.pt") for s in SETS}
    full, fp8 = conds["full fp16"], conds["T5 FP8"]
    run = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                       "ram_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB,
                       "torch": torch.__version__, "comfyui": results[0]["comfyui"]},
           "weights": "random, real key layout and shapes (N(0, fan_in^-1/2) CLIP, Hugging Face T5 init)",
           "prompt": PROMPT, "sets": results,
           "t5_fp8_vs_fp16": {"t5_tokens_rel_error": relative_error(fp8["cond"][:, 77:], full["cond"][:, 77:]),
                              "clip_tokens_equal": bool(torch.equal(fp8["cond"][:, :77], full["cond"][:, :77])),
                              "pooled_equal": bool(torch.equal(fp8["pooled"], full["pooled"]))}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "text_encoders.json").write_text(json.dumps(run, indent=1))
    # bench/report.py appends every bench/RESULTS_*.md to bench/RESULTS.md
    (REPO / "bench" / "RESULTS_text_encoders.md").write_text(markdown(run))
    print(json.dumps(run["t5_fp8_vs_fp16"]))


def markdown(run):
    machine, sets = run["machine"], {r["set"]: r for r in run["sets"]}
    full, fp8 = sets["full fp16"], sets["T5 FP8"]
    lines = ["## Text-encoder sets", "",
             f"CPU machine ({machine['cores']} cores, {machine['ram_gib']:.1f} GiB RAM), torch {machine['torch']}, "
             f"ComfyUI {machine['comfyui']}. Random weights with the real key layouts and shapes (CLIP-L 123M, CLIP-G "
             "695M, T5-XXL 4.76B parameters), files in fp16; each set built by SD3.5 Text Encoder Preset (FP8) in a "
             "process of its own, then one prompt encoded with stock CLIPTextEncode. "
             "`python bench/text_encoder_memory.py`, results in `results/text_encoders.json`.", "",
             "| preset | resident GiB | CLIP-L | CLIP-G | T5-XXL | peak anonymous GiB | peak RSS GiB | load s | "
             "encode s | context |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in run["sets"]:
        parts = [f"{r['per_encoder_bytes'][e] / GIB:.2f}" if e in r["per_encoder_bytes"] else "-"
                 for e in ("clip_l", "clip_g", "t5xxl")]
        lines.append(f"| {r['preset']} | {r['model_size_bytes'] / GIB:.2f} | {' | '.join(parts)} | "
                     f"{r['peak_anonymous_load_bytes'] / GIB:.2f} | {r['peak_rss_bytes'] / GIB:.2f} | {r['load_s']:.1f} | "
                     f"{r['encode_s']:.1f} | {' x '.join(map(str, r['cond_shape'][1:]))} |")
    error = run["t5_fp8_vs_fp16"]
    lines += ["",
              "- Resident is the CLIP patcher's `model_size()`: the bytes of every stored tensor, what ComfyUI budgets "
              f"for the text encoders. T5 in FP8 holds {fp8['per_encoder_bytes']['t5xxl'] / GIB:.2f} GiB instead of "
              f"{full['per_encoder_bytes']['t5xxl'] / GIB:.2f} (linears 1 byte per weight plus one fp32 scale per output "
              "channel; token embeddings, layer norms and the position bias in fp16); the whole set takes "
              f"{fp8['model_size_bytes'] / full['model_size_bytes']:.0%} of the full fp16 set.",
              "- Peak anonymous memory is what the process itself held while loading (ComfyUI imported: "
              f"{full['baseline_anonymous_bytes'] / GIB:.2f} GiB of it); peak RSS also counts the model files' pages "
              "mapped while they were read (page cache, reclaimable).",
              f"- T5 FP8 against full fp16, same prompt: T5 tokens {error['t5_tokens_rel_error']:.1%} relative error; "
              f"CLIP tokens {'identical' if error['clip_tokens_equal'] else 'different'}, pooled "
              f"{'identical' if error['pooled_equal'] else 'different'}. With random weights each block's FP8 weight "
              "error (about 2.6%) adds up over T5's 24 blocks; the error with real T5-XXL weights is not measured here.",
              "- On this CPU the T5 FP8 load time is the quantization of 4.6B weights (on a GPU it runs on the GPU), "
              "and weight-only FP8 dequantizes every linear at each call, hence the longer encode. Other jobs shared "
              "the two cores during the run: the seconds are indicative, the memory figures are the result."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
