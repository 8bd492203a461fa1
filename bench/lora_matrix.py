"""LoRA, offloading and DynamicVRAM on one ComfyUI host, in one process on one GPU: stock default
and this pack's two compute paths through ComfyUI's own LoRA code (comfy.sd.load_lora_for_models,
what LoraLoader calls) and sampling (comfy.sample.sample).

  python bench/lora_matrix.py --label "0.33 DynamicVRAM" --dynamic-vram --out DIR
  python bench/lora_matrix.py --label "0.33 DynamicVRAM" --dynamic-vram --vram-cap-gib 8 --out DIR
  python bench/lora_matrix.py --label "0.33 DynamicVRAM" --dynamic-vram --variants ours_fp8_compiled --out DIR
  python bench/lora_matrix.py --label "0.33 DynamicVRAM" --dynamic-vram --variants ours_fp8_cuda_graphs --out DIR

For each variant the LoRA states run in this order on the same loaded model, after one untimed run
that stages the weights (and compiles): none, one LoRA, two stacked, the first at another strength,
none again (the LoRA removed); with --rounds N the five states run N times in turn. After each
sampling comes what ComfyUI's executor does after a node (devtools/comfy_host.after_node). Every latent error is
against stock default with the same LoRA state; a run without --vram-cap-gib computes those
references and saves them (DIR/references_<label>.pt) for the capped run of the same host.
SD3.5 Large shapes, random weights; two random rank-16 LoRAs on every joint block's qkv and fc1.
"""
import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import pack_import  # noqa: E402,F401  (the pack as `sd35_fp8`)
from bench.sd35_bench import CFG, SAMPLER, build, conditioning, random_weights, torch_compile_model  # noqa: E402
from devtools.comfy_host import after_node, import_comfy_in_process  # noqa: E402
from devtools.factor_searches import counted_factor_searches  # noqa: E402
from devtools.gpu_driver import nvidia_driver_version  # noqa: E402
from devtools.numerics import relative_error  # noqa: E402
from devtools.random_lora import random_lora  # noqa: E402
from devtools.step_accounting import step_accounting  # noqa: E402
from sd35_fp8.quant.reports.report import GIB  # noqa: E402

# A/B variants of ours FP8 (the code before a change), built as ours_fp8 and then switched
A_B_OF_OURS_FP8 = ("ours_fp8_lora_after", "ours_fp8_lora_unfused", "ours_fp8_lora_epilogue")
# functions of a cell's host profile (--host-profile) kept, the costliest first
HOST_PROFILE_FUNCTIONS = 40
# variant suffixes that compile the model (compiled_as): stock TorchCompileModel, this pack's CUDA graphs
COMPILE_MODES = ("compiled", "cuda_graphs")
STATES = (("none", ()), ("one LoRA", (("a", 1.0),)), ("two stacked", (("a", 1.0), ("b", 1.0))),
          ("strength changed", (("a", 0.5),)), ("LoRA removed", ()))


def with_loras(model, loras, state):
    import comfy.sd
    for lora_name, strength in state:
        model, _ = comfy.sd.load_lora_for_models(model, None, loras[lora_name], strength, 0)
    return model


def device_memory_in_use():
    free, total = torch.cuda.mem_get_info()
    return (total - free) / GIB


def sample_timed(model, args, positive, negative, on_step=lambda issued_at: None):
    """(latent, seconds per step after the first, device memory in use at most, sampled per step);
    on_step(issued_at): called after each step. Ends with what ComfyUI's executor does after a node."""
    import comfy.sample
    latent = torch.zeros(1, 16, args.size // 8, args.size // 8)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(args.seed))
    times, in_use, last = [], [], [None]

    def callback(step, x0, x, total):
        issued_at = time.perf_counter()
        torch.cuda.synchronize()
        now = time.perf_counter()
        if last[0] is not None:
            times.append(now - last[0])
        in_use.append(device_memory_in_use())
        on_step(issued_at)
        # what this callback did (on_step's probes and profiler cycles among it) is not the next step's
        last[0] = time.perf_counter()

    with torch.inference_mode():  # as ComfyUI's executor runs every node
        out = comfy.sample.sample(model, noise, args.steps, CFG, SAMPLER, "sgm_uniform", positive, negative, latent,
                                  seed=args.seed, callback=callback, disable_pbar=True)
    after_node()
    return out, times, max(in_use)


def profiled_per_step(run):
    """run(on_step) under torch.profiler, one profiling cycle per sampling step: (run's result, one
    summary per step: GPU time of device events, host-to-device copies, top kernels). What changes
    from step to step (a slow stretch after a LoRA state change) shows here, not in one step's sum."""
    from torch.profiler import ProfilerActivity, profile, schedule
    steps = []

    def summarize(prof):
        # device events only: an aten op's device time is that of the kernels it launched, listed too
        # (the profiler's own ProfilerStep range is listed among them and spans the step: left out)
        events = [e for e in prof.key_averages()
                  if e.device_type == torch.autograd.DeviceType.CUDA and e.self_device_time_total > 0
                  and not e.key.startswith("ProfilerStep")]
        copies = [e for e in events if e.key.startswith("Memcpy HtoD")]
        # 30: a LoRA's own kernels (its columns, the context stream's addmm_) rank below the twelfth
        top = sorted(events, key=lambda e: -e.self_device_time_total)[:30]
        steps.append({"gpu_ms": round(sum(e.self_device_time_total for e in events) / 1000, 2),
                      "htod_copies": sum(e.count for e in copies),
                      "htod_ms": round(sum(e.self_device_time_total for e in copies) / 1000, 2),
                      "top": [f"{e.self_device_time_total / 1000:.2f} ms, {e.count} calls: {e.key[:90]}" for e in top]})

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA],
                 schedule=schedule(wait=0, warmup=0, active=1), on_trace_ready=summarize) as prof:
        result = run(prof.step)
    # leaving the profiler closes one more cycle: what ran after the last step, not a step
    return result, steps[:-1]


def host_profiled(run, steps):
    """run(on_step) with the host's Python profiled (cProfile) from the end of its first sampling step to
    the end of its last: (run's result, the functions that took the most of the host's own time (tottime)
    per step). The first step (a LoRA's factor searches, staging) is left out; what a LoRA adds to every
    later step's host time is what shows."""
    import cProfile
    import pstats
    profiler, calls = cProfile.Profile(), [0]

    def on_step():
        calls[0] += 1
        if calls[0] == 1:
            profiler.enable()
        elif calls[0] == steps:
            profiler.disable()
    result = run(on_step)
    profiler.disable()
    profiled = max(min(calls[0], steps) - 1, 1)
    stats = pstats.Stats(profiler).stats
    top = sorted(stats.items(), key=lambda item: -item[1][2])[:HOST_PROFILE_FUNCTIONS]
    return result, [{"us_per_step": round(tottime / profiled * 1e6, 1), "calls_per_step": round(calls_ / profiled, 2),
                     "function": f"{Path(file).name}:{line}:{name}"}
                    for (file, line, name), (_, calls_, tottime, _, _) in top]


def _chosen(cells, variant, state_name):
    return f"{variant}:{state_name}" in cells or f"{variant}:*" in cells


def run_cell(variant, state_name, model, args, positive, negative):
    cell = {"variant": variant, "lora": state_name}
    torch.cuda.reset_peak_memory_stats()
    try:
        with counted_factor_searches() as searches:
            if _chosen(args.profile, variant, state_name):
                # profiled while timed: the profiler's overhead is in this cell's step times
                (latent, times, in_use), cell["profile_per_step"] = profiled_per_step(
                    lambda on_step: sample_timed(model, args, positive, negative, lambda issued_at: on_step()))
            elif _chosen(args.host_profile, variant, state_name):
                # likewise
                (latent, times, in_use), cell["host_profile"] = host_profiled(
                    lambda on_step: sample_timed(model, args, positive, negative, lambda issued_at: on_step()),
                    args.steps)
            elif args.count:
                with step_accounting() as (cell["count_per_step"], on_step):
                    latent, times, in_use = sample_timed(model, args, positive, negative, on_step)
            else:
                latent, times, in_use = sample_timed(model, args, positive, negative)
        cell["factor_searches"] = searches[0]
    except Exception as error:  # a cell that fails is a result: record it and go on
        cell.update(error=f"{type(error).__name__}: {error}", traceback=traceback.format_exc(limit=8))
        print(json.dumps({k: v for k, v in cell.items() if k != "traceback"}), flush=True)
        return cell, None
    cell.update(s_per_step=round(statistics.median(times), 4), step_times=[round(t, 4) for t in times],
                torch_peak_gib=round(torch.cuda.max_memory_allocated() / GIB, 2), device_in_use_gib=round(in_use, 2))
    return cell, latent


@contextmanager
def lora_added_after_gemm():
    """Ours FP8 built as before the LoRA moved into the FP8 GEMM's epilogue: added to
    torch._scaled_mm's output with one addmm_ (the variant ours_fp8_lora_after, an A/B in one process)."""
    from sd35_fp8.quant.kernels import linear_dispatch
    from sd35_fp8.quant.kernels.fp8_linear import fp8_linear_rowwise, fp8_rows_matmul

    def added_after(x, weight_fp8, weight_scale, bias, low_rank, quantize, gemm):
        return low_rank.add_to(fp8_linear_rowwise(x, weight_fp8, weight_scale, bias, quantize=quantize), x)

    def added_after_rows(x_fp8, x_scale, weight_fp8, weight_scale, bias, low, up, gemm):
        return fp8_rows_matmul(x_fp8, x_scale, weight_fp8, weight_scale, bias, low.dtype).addmm_(low, up.t())
    in_gemm = linear_dispatch.fp8_linear_rowwise_low_rank, linear_dispatch.fp8_rows_matmul_low_rank
    linear_dispatch.fp8_linear_rowwise_low_rank, linear_dispatch.fp8_rows_matmul_low_rank = added_after, added_after_rows
    try:
        yield
    finally:
        linear_dispatch.fp8_linear_rowwise_low_rank, linear_dispatch.fp8_rows_matmul_low_rank = in_gemm


def lora_leaves_one_pass_blocks(model):
    """Ours FP8 as before a LoRA'd layer took its input as FP8 rows (the variant ours_fp8_lora_unfused, an
    A/B in one process): a layer with a LoRA or another weight patch took no FP8 rows, so its input went
    through ComfyUI's unfused norm and modulation, and a LoRA on qkv sent its whole block back to
    ComfyUI's methods. Changes the model's own Linear class (nodes/ops.py make_fp8_ops makes one per model)."""
    from sd35_fp8.nodes.ops import FP8Linear
    linear = next(type(m) for m in model.model.modules() if isinstance(m, FP8Linear))
    takes_fp8_rows = linear.takes_fp8_rows

    def unless_patched(layer, x):
        patched = (getattr(layer.weight, "sd35_low_rank", None) is not None or len(layer.weight_function) > 0
                   or layer.__dict__.get("weight_lowvram_function") is not None)
        return not patched and takes_fp8_rows(layer, x)
    linear.takes_fp8_rows = unless_patched


def lora_in_epilogue(model):
    """Ours FP8 with its LoRAs in the Triton GEMM's epilogue, as before they rode in cuBLAS's GEMM as extra
    columns (the variant ours_fp8_lora_epilogue, an A/B in one process): its layers make no columns. Changes
    the model's own Linear class (nodes/ops.py make_fp8_ops makes one per model)."""
    from sd35_fp8.nodes.ops import FP8Linear
    next(type(m) for m in model.model.modules() if isinstance(m, FP8Linear)).lora_columns = False


def _add_round(cell, again, latent, latents):
    """Folds a later round of the same LoRA state into its cell: s/step becomes the median of the
    rounds' medians (the host's speed drifts over minutes on the lent machines; rounds spread every
    state over that drift alike), and the round must give the first round's latent bit for bit."""
    if "error" in again or "error" in cell:
        cell.setdefault("errors_in_later_rounds", []).append(again.get("error", "first round failed"))
        return
    cell.setdefault("s_per_step_rounds", [cell["s_per_step"]]).append(again["s_per_step"])
    cell["s_per_step"] = round(statistics.median(cell["s_per_step_rounds"]), 4)
    if "count_per_step" in again:
        cell.setdefault("count_per_step_later_rounds", []).append(again["count_per_step"])
    if cell["lora"] in latents:
        same = torch.equal(latent, latents[cell["lora"]])
        cell["same_latent_every_round"] = cell.get("same_latent_every_round", True) and same
    if cell["lora"] == "LoRA removed" and "none" in latents:
        cell["bit_equal_to_none"] = cell.get("bit_equal_to_none", True) and torch.equal(latent, latents["none"])
    print(json.dumps({"variant": cell["variant"], "lora": cell["lora"], "round": len(cell["s_per_step_rounds"]),
                      "s_per_step": again["s_per_step"]}), flush=True)


def compiled_as(model, compiled):
    """model through stock TorchCompileModel ("compiled") or this pack's compile with CUDA graphs
    ("cuda_graphs"); under DynamicVRAM either compiles a copy outside it, built again through build()'s reload."""
    if compiled == "cuda_graphs":
        from sd35_fp8.nodes.compile_cuda_graphs import compile_with_cuda_graphs
        return compile_with_cuda_graphs(model)
    return torch_compile_model(model)


def run_variant(variant, weights, loras, args, positive, negative, references, on_cells, compiled=None):
    """The variant's cells (each LoRA state, folded over the rounds) and latents; on_cells(cells) after every
    cell, with the variant's cells so far."""
    import comfy.model_management
    comfy.model_management.unload_all_models()
    gc.collect()
    comfy.model_management.soft_empty_cache()
    started = time.perf_counter()
    lora_after = variant == "ours_fp8_lora_after"
    with lora_added_after_gemm() if lora_after else nullcontext():
        base = build("ours_fp8" if variant in A_B_OF_OURS_FP8 else variant, weights)
    if variant == "ours_fp8_lora_unfused":
        lora_leaves_one_pass_blocks(base)
    if variant == "ours_fp8_lora_epilogue":
        lora_in_epilogue(base)
    load_s = round(time.perf_counter() - started, 1)
    if compiled:
        base = compiled_as(base, compiled)
        torch._dynamo.utils.counters.clear()
    states = STATES[:2] if compiled or variant == "stock_fp8" else STATES
    # The first run after a load stages weights (and compiles): timed apart, so "none" is the steady state.
    first_run, _ = run_cell(variant, "first run after load", base, args, positive, negative)
    cells, latents = {}, {}
    for round_index in range(1 if compiled else args.rounds):
        for state_name, state in states:
            cell, latent = run_cell(variant, state_name, with_loras(base, loras, state), args, positive, negative)
            if round_index:
                _add_round(cells[state_name], cell, latent, latents)
                on_cells(list(cells.values()))
                continue
            cell.update(load_s=load_s, compiled=compiled)
            if state_name == "none":
                cell["first_run_s_per_step"] = first_run.get("s_per_step", first_run.get("error"))
            if latent is not None:
                latents[state_name] = latent
                reference = references.get(state_name)
                if reference is not None:
                    cell["latent_error"] = round(relative_error(latent, reference), 4)
                if state_name == "LoRA removed" and "none" in latents:
                    cell["bit_equal_to_none"] = torch.equal(latent, latents["none"])
            if compiled:
                cell["recompiles"] = int(sum(torch._dynamo.utils.counters["recompiles"].values()))
            print(json.dumps({k: v for k, v in cell.items() if k != "step_times"}), flush=True)
            cells[state_name] = cell
            on_cells(list(cells.values()))
    del base
    return list(cells.values()), latents


def total_gpu_memory_gib():
    # Asked of nvidia-smi: comfy-aimdo must start before this process touches CUDA (main.py's order).
    mib = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits", "-i", "0"],
                         capture_output=True, text=True, check=True).stdout.split()[0]
    return int(mib) / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label", required=True, help="the host as the tables name it, e.g. '0.33 DynamicVRAM'")
    parser.add_argument("--dynamic-vram", action="store_true", help="turn DynamicVRAM on as ComfyUI 0.33's main.py does")
    parser.add_argument("--vram-cap-gib", type=float, default=0, help="ComfyUI's --reserve-vram leaving this much")
    parser.add_argument("--variants", help="comma-separated variants instead of the run's default set; "
                        "ours_fp8_compiled is ours FP8 through TorchCompileModel's compile, without and with a LoRA; "
                        "ours_fp8_cuda_graphs likewise through this pack's compile with CUDA graphs; "
                        "ours_fp8_lora_after adds the LoRA after the FP8 GEMM instead of in its epilogue; "
                        "ours_fp8_lora_unfused sends LoRA'd layers through ComfyUI's unfused norms, as before they "
                        "took FP8 rows; ours_fp8_lora_epilogue puts LoRAs in the Triton GEMM's epilogue instead of "
                        "cuBLAS's GEMM")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=1,
                        help="run the LoRA states this many times in turn on the same model; s/step is the "
                             "median of the rounds' medians")
    parser.add_argument("--profile", nargs="*", default=[],
                        help="variant:state cells profiled step by step while timed, e.g. 'ours_fp8:LoRA removed'; "
                             "'ours_fp8:*' for every state of a variant (the report then gives the LoRA's cost in "
                             "GPU time beside s/step)")
    parser.add_argument("--host-profile", nargs="*", default=[],
                        help="variant:state cells whose host Python is profiled (cProfile) over the steps after the "
                             "first, as --profile names them; the cell keeps the costliest functions per step")
    parser.add_argument("--count", action="store_true",
                        help="every cell: CPU time, garbage collections and ComfyUI staging calls per step "
                             "(devtools/step_accounting.py)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    total_gib = total_gpu_memory_gib()
    reserve = total_gib - args.vram_cap_gib if args.vram_cap_gib else None
    import_comfy_in_process(dynamic_vram=args.dynamic_vram, reserve_vram_gib=reserve)
    import comfy.model_patcher
    import comfyui_version
    if args.vram_cap_gib and not args.dynamic_vram:
        # ComfyUI's own estimates keep within the reserve; the fraction makes torch enforce it.
        torch.cuda.set_per_process_memory_fraction(args.vram_cap_gib / total_gib)
    weights = random_weights("large", "gaussian", args.seed)
    loras = {"a": random_lora(weights, args.seed + 10), "b": random_lora(weights, args.seed + 20)}
    positive, negative = conditioning(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    references_file = args.out / f"references_{args.label.replace(' ', '_')}.pt"
    run = {"label": args.label, "comfyui": comfyui_version.__version__, "dynamic_vram": args.dynamic_vram,
           "model_patcher": getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher).__name__,
           "vram_cap_gib": args.vram_cap_gib, "device": torch.cuda.get_device_name(0),
           "driver": nvidia_driver_version(), "torch": torch.__version__, "python": platform.python_version(),
           "allocator": torch.cuda.get_allocator_backend(),
           "model": "SD3.5 Large", "size": args.size, "steps": args.steps, "cfg": CFG, "batch": 2, "sampler": SAMPLER,
           "lora_rank": 16,
           "command": " ".join(["python"] + sys.argv), "reference": "stock default, same LoRA state", "results": []}
    name = (f"lora_{args.label.replace(' ', '_').replace('.', '')}{'_cap%g' % args.vram_cap_gib if args.vram_cap_gib else ''}"
            f"{'_' + args.variants.replace(',', '_') if args.variants else ''}.json")
    variants = (args.variants.split(",") if args.variants else
                ("stock_fp8", "ours_fp8", "ours_weight_only") if args.vram_cap_gib else
                ("stock_default", "ours_fp8", "ours_weight_only"))

    def write(results):
        # whole or not at all (replaced, not rewritten in place), after every cell: a run stopped by a time
        # limit keeps every cell it measured
        partial = args.out / (name + ".partial")
        partial.write_text(json.dumps({**run, "results": results}, indent=1))
        os.replace(partial, args.out / name)

    def written_with(done):
        return lambda cells: write(done + cells)

    if "stock_default" in variants:
        cells, references = run_variant("stock_default", weights, loras, args, positive, negative, {},
                                        written_with([]))
        run["results"] += cells
        torch.save(references, references_file)
    else:  # without it (a run of chosen variants on a fresh machine) the cells carry no error
        references = torch.load(references_file) if references_file.exists() else {}
    for variant in (v for v in variants if v != "stock_default"):
        compiled = next((mode for mode in COMPILE_MODES if variant.endswith("_" + mode)), None)
        run["results"] += run_variant(variant.removesuffix("_" + compiled) if compiled else variant, weights, loras,
                                      args, positive, negative, references, written_with(list(run["results"])),
                                      compiled=compiled)[0]
    write(run["results"])
    print("wrote", args.out / name, flush=True)
    if args.dynamic_vram:
        # comfy-aimdo 0.4.13 segfaults in the interpreter's teardown (every DynamicVRAM run on the H200),
        # after everything here is written; ComfyUI's own server never goes through that teardown.
        os._exit(0)


if __name__ == "__main__":
    main()
