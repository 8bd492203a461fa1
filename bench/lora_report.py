"""Builds bench/RESULTS_lora.md (bench/report.py appends it to RESULTS.md) from the LoRA matrix
(bench/lora_matrix.py: bench/results/lora_*.json) and the real-server run (bench/lora_server.py:
bench/results/lora_server.json).

  python bench/lora_report.py
"""
import json
import statistics
from pathlib import Path

try:
    from report import table_head  # bench/report.py, beside this script when it runs as one
except ModuleNotFoundError:
    from bench.report import table_head  # imported from the repository root (the tests)

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
LABELS = {"stock_default": "stock default", "stock_fp8": "stock fp8_e4m3fn", "ours_fp8": "ours FP8 matmul",
          "ours_weight_only": "ours weight-only",
          "ours_fp8_lora_unfused": "ours FP8 matmul, LoRA'd layers off the one-pass blocks (as before the nineteenth session)",
          "ours_fp8_lora_epilogue": "ours FP8 matmul, LoRAs in the Triton GEMM's epilogue (as before the LoRA columns)"}
# a cell's "compiled": stock TorchCompileModel (True in runs before CUDA graphs were a mode), this pack's
# compile with CUDA graphs, or eager
COMPILED_LABELS = {True: " (TorchCompileModel)", "compiled": " (TorchCompileModel)",
                   "cuda_graphs": " (compiled with CUDA graphs)", None: ""}
# The tables the criteria count, by session, newest first: those that ran the LoRA path as it stands (K-aligned
# LoRA columns written by the norm, few rows added after the GEMM; twenty-fifth session on). The thirty-sixth and
# thirty-seventh sessions' ran the code of the thirty-third (the column kernel joining the weight, the context
# stream's down projection in the norm's launch) with the thirty-fourth's harness (comfy-aimdo's log level as
# main.py sets it); the thirty-seventh's reran every 8 GiB table with it, and the thirty-ninth's again with the
# allocator main.py chooses (cudaMallocAsync) in the environment. The forty-first's timed and profiled ours FP8
# at full VRAM on each host and profiled it under DynamicVRAM's cap, with the code of the fortieth (the columns only
# where a call joins them, a removed LoRA's side paths let go). Tables of older code (analysis_lora.md says which)
# come after them.
CURRENT_SESSIONS = (
    ("lora_033_DynamicVRAM41.json", "lora_033_DynamicVRAM_profiled41.json", "lora_033_DynamicVRAM_cap8_profiled41.json",
     "lora_033_no_DynamicVRAM41.json", "lora_0375_41.json"),
    ("lora_033_DynamicVRAM_cap8_39.json", "lora_033_DynamicVRAM_references39.json",
     "lora_033_no_DynamicVRAM_cap8_39.json", "lora_0375_cap8_39.json"),
    ("lora_033_DynamicVRAM_cap8_37.json", "lora_033_DynamicVRAM_references37.json", "lora_033_no_DynamicVRAM37.json",
     "lora_033_no_DynamicVRAM_weight_only37.json", "lora_033_no_DynamicVRAM_cap8_37.json",
     "lora_0375_cap8_37.json", "lora_0375_references37.json"),
    ("lora_033_DynamicVRAM_counted36.json", "lora_033_DynamicVRAM_counted36b.json",
     "lora_033_no_DynamicVRAM_counted36.json", "lora_0375_counted36.json", "lora_033_DynamicVRAM_profiled36.json"),
    ("lora_033_DynamicVRAM_counted34.json",),
    ("lora_033_DynamicVRAM_counted30.json", "lora_033_DynamicVRAM_ours_fp8_compiled30.json"),
    ("lora_033_DynamicVRAM_counted26.json", "lora_033_DynamicVRAM_cap8_26.json", "lora_0375_26.json",
     "lora_0375_counted26.json", "lora_0375_probe26.json"),
    ("lora_033_DynamicVRAM_profiled25.json", "lora_033_no_DynamicVRAM25.json"))
CURRENT_TABLES = tuple(name for session in CURRENT_SESSIONS for name in session)
# The criteria of the LoRA issue, for this pack's variants
ERROR_GROWTH, LORA_COST = 0.01, 0.05


def matrix_table(run):
    cap = f", GPU memory capped at {run['vram_cap_gib']:g} GiB" if run["vram_cap_gib"] else ", full VRAM"
    lines = [f"### ComfyUI {run['label']}{cap}", "",
             f"{run['device']}, torch {run['torch']}, ComfyUI {run['comfyui']} ({run.get('model_patcher') or 'ModelPatcherDynamic'}), {run['model']}, "
             f"{run['size']}x{run['size']}, CFG {run['cfg']} (batch {run['batch']}), {run['sampler']}, {run['steps']} steps, "
             f"random rank-{run['lora_rank']} LoRAs on every qkv and fc1. `{run['command']}`"
             + (f" Note: {run['note']}." if run.get("note") else ""), "",
             *table_head("variant", "LoRA", "s/step", "LoRA cost", "latent error", "error - no-LoRA error",
                         "bit-equal to no LoRA", "device GiB in use", "GPU ms/step (profiled)",
                         "per round: s/step, host issue s/step, weights staged per step, host probes")]
    by_variant = {}
    for cell in run["results"]:
        by_variant.setdefault(cell["variant"], []).append(cell)
    for variant, cells in by_variant.items():
        base = cells[0]
        for cell in cells:
            label = LABELS[variant] + COMPILED_LABELS[cell.get("compiled") or None]
            if "error" in cell:
                lines.append(f"| {label} | {cell['lora']} | fails: {cell['error'][:90]} | | | | | | | |")
                continue
            cost = cell["s_per_step"] / base["s_per_step"] - 1 if wall_times_compare(cell, base) else None
            growth = (cell["latent_error"] - base["latent_error"]
                      if "latent_error" in cell and "latent_error" in base else None)
            first = f" (first run after load {cell['first_run_s_per_step']:.4f})" if "first_run_s_per_step" in cell else ""
            lines.append(f"| {label} | {cell['lora']} | {cell['s_per_step']:.4f}{first} | "
                         f"{'' if cell is base or cost is None else f'{cost:+.1%}'} | {cell.get('latent_error', '')} | "
                         f"{'' if cell is base or growth is None else f'{growth:+.4f}'} | "
                         f"{ {True: 'yes', False: 'no'}.get(cell.get('bit_equal_to_none'), '')} | {cell['device_in_use_gib']:.2f} | "
                         f"{gpu_time(cell, base)} | {per_round(cell)} |")
    return "\n".join(lines) + "\n"


def wall_times_compare(cell, base):
    """Whether two cells' s/step compare: under the profiler a step's wall time is mostly the
    profiler's own host work."""
    return "s_per_step" in base and not ("profile_per_step" in cell or "profile_per_step" in base)


def gpu_ms_per_step(cell):
    """The median GPU time of a profiled cell's steps after the first (the first holds the LoRA's
    factor searches and any autotuning), or None for a cell measured without the profiler."""
    steps = cell.get("profile_per_step", [])[1:]
    return statistics.median(step["gpu_ms"] for step in steps) if steps else None


def gpu_time(cell, base):
    ms = gpu_ms_per_step(cell)
    if ms is None:
        return ""
    base_ms = gpu_ms_per_step(base)
    return f"{ms:.1f}" + (f" ({ms / base_ms - 1:+.1%})" if cell is not base and base_ms else "")


def per_round(cell):
    """Each round's s/step, and with step accounting (`--count`) the median over its steps after the
    first of the host's time to issue a step, of the weights DynamicVRAM staged in it and of the host's
    probes (devtools/step_accounting.py: a fixed piece of Python, a fixed number of kernel launches)."""
    speeds = cell.get("s_per_step_rounds", [cell["s_per_step"]])
    counted = [cell["count_per_step"], *cell.get("count_per_step_later_rounds", [])] if "count_per_step" in cell else []
    rounds = []
    for index, speed in enumerate(speeds):
        text = f"{speed:.3f}"
        steps = counted[index][1:] if index < len(counted) else []
        if steps:
            text += f", {statistics.median(s['issue_s'] for s in steps):.3f}"
            if "vbar_not_resident" in steps[0]:
                text += f", {statistics.median(s['vbar_not_resident'] for s in steps):g}"
            if "host_probe_s" in steps[0]:
                text += f", probe {statistics.median(s['host_probe_s'] for s in steps) * 1000:.2f} ms"
            if "launch_probe_s" in steps[0]:
                text += f", launches {statistics.median(s['launch_probe_s'] for s in steps) * 1000:.2f} ms"
        rounds.append(text)
    return " / ".join(rounds)


def verdicts(sessions):
    """Each criterion of the issue over every ours cell of every run (sessions: lists of runs, newest first): how
    many hold. A LoRA's cost counts, for each host, cap and variant, in the newest session that timed it (its
    s/step) or profiled it (its GPU time): older measurements of the same cells ran older code."""
    growth, cost, cost_fastest, cost_gpu, removed, cap_speed = held = [], [], [], [], [], []
    timed_later, profiled_later = set(), set()
    for session in sessions:
        cells = [(run["label"], run["vram_cap_gib"], cell) for run in session for cell in run["results"]
                 if not cell.get("compiled")]
        timed = {(label, cap, cell["variant"]) for label, cap, cell in cells if "profile_per_step" not in cell}
        profiled = {(label, cap, cell["variant"]) for label, cap, cell in cells if "profile_per_step" in cell}
        for run in session:
            for total, part in zip(held, _run_verdicts(run, timed_later, profiled_later)):
                total += part
        timed_later |= timed
        profiled_later |= profiled
    rows = [(f"latent error with a LoRA within {ERROR_GROWTH} of the same variant without", growth),
            ("LoRA removed gives the unpatched output bit for bit", removed),
            (f"a LoRA costs at most {LORA_COST:.0%} s/step (the newest session's tables of each host)", cost),
            ("the same, fastest round against fastest round (tables with rounds)", cost_fastest),
            (f"a LoRA costs at most {LORA_COST:.0%} GPU time per step (profiled cells)", cost_gpu),
            ("under the 8 GiB cap, ours FP8 no slower than stock fp8_e4m3fn (first run, none, one LoRA)", cap_speed)]
    lines = [*table_head("criterion", "cells that hold")]
    lines += [f"| {name} | {f'{sum(held)} of {len(held)}' if held else 'no cells measured yet'} |" for name, held in rows]
    return "\n".join(lines) + "\n"


def _run_verdicts(run, timed_later, profiled_later):
    """verdicts' criteria over one run's cells: (growth, cost, cost_fastest, cost_gpu, removed, cap_speed), each a
    list of whether a cell holds it; timed_later, profiled_later: the (host, cap, variant) a newer session timed or
    profiled, whose s/step or GPU-time cost this run's cells no longer count for."""
    growth, cost, cost_fastest, cost_gpu, removed, cap_speed = [], [], [], [], [], []
    cells = run["results"]
    for variant in ("ours_fp8", "ours_weight_only"):
        mine = [c for c in cells if c["variant"] == variant and not c.get("compiled") and "error" not in c]
        if not mine:
            continue
        key = run["label"], run["vram_cap_gib"], variant
        base = mine[0]
        for cell in mine[1:]:
            if cell["lora"] == "LoRA removed":
                removed.append(cell.get("bit_equal_to_none", False))
                continue
            # a capped run measures errors only against the references its full-VRAM run left
            if "latent_error" in cell and "latent_error" in base:
                growth.append(cell["latent_error"] - base["latent_error"] <= ERROR_GROWTH)
            if key not in timed_later and wall_times_compare(cell, base):
                cost.append(cell["s_per_step"] <= (1 + LORA_COST) * base["s_per_step"])
                # a run cut short by its time limit leaves some cells with one round
                if "s_per_step_rounds" in base and "s_per_step_rounds" in cell:
                    fastest, base_fastest = min(cell["s_per_step_rounds"]), min(base["s_per_step_rounds"])
                    cost_fastest.append(fastest <= (1 + LORA_COST) * base_fastest)
            cell_ms, base_ms = gpu_ms_per_step(cell), gpu_ms_per_step(base)
            if key not in profiled_later and cell_ms is not None and base_ms is not None:
                cost_gpu.append(cell_ms <= (1 + LORA_COST) * base_ms)
    if run["vram_cap_gib"] and any(c["variant"] == "stock_fp8" for c in cells):
        # every state both ran, and the first run after each load
        for state in ("none", "one LoRA"):
            ours = next(c for c in cells if c["variant"] == "ours_fp8" and c["lora"] == state)
            stock = next(c for c in cells if c["variant"] == "stock_fp8" and c["lora"] == state)
            if wall_times_compare(ours, stock):
                cap_speed.append(ours["s_per_step"] <= stock["s_per_step"])
            if state == "none" and "first_run_s_per_step" in ours:
                cap_speed.append(ours["first_run_s_per_step"] <= stock["first_run_s_per_step"])
    return growth, cost, cost_fastest, cost_gpu, removed, cap_speed


def server_section(server):
    lines = ["### A real server: ComfyUI main.py on the GPU, DynamicVRAM on (its default)", "",
             f"{server['device']}, ComfyUI {server['comfyui']}, DynamicVRAM enabled: "
             f"{'yes' if server['dynamic_vram_enabled'] else 'no'} (from the server log). {server['checkpoint']}; "
             f"LoRA: {server['lora']}; {server['size']}x{server['size']}, {server['steps']} steps; Load SD3.5 Checkpoint "
             "(FP8) -> LoraLoaderModelOnly -> KSampler -> VAEDecode -> SaveImage, queued through /prompt "
             "(`python bench/lora_server.py`; TorchCompileModel between the LoRA and KSampler where the table says).",
             "", *table_head("compute", "LoRA strength", "TorchCompileModel", "status", "seconds", "image")]
    lines += [f"| {r['compute']} | {r['lora_strength']:g} | {'yes' if r.get('torch_compile_model') else 'no'} | "
              f"{r['status']}{': ' + r['error'] if r.get('error') else ''} | {r['seconds']} | {', '.join(r['images'])} |"
              for r in server["runs"]]
    return "\n".join(lines) + "\n"


def lora_results():
    """The LoRA section of the results page, as markdown."""
    sessions = [[json.loads((RESULTS / name).read_text()) for name in session] for session in CURRENT_SESSIONS]
    current = [run for session in sessions for run in session]
    earlier = [json.loads(path.read_text()) for path in sorted(RESULTS.glob("lora_*.json"))
               if path.name != "lora_server.json" and path.name not in CURRENT_TABLES]
    server = json.loads((RESULTS / "lora_server.json").read_text())
    sections = ["## LoRA, offloading and DynamicVRAM (the LoRA issue)\n",
                (BENCH / "analysis_lora.md").read_text(),
                f"\n### The criteria, over the current tables (the first {len(current)} below)\n",
                verdicts(sessions), "\n" + server_section(server)]
    sections += ["\n" + matrix_table(run) for run in current]
    sections += ["\n## Earlier tables, older code (analysis_lora.md says which)\n"]
    sections += ["\n" + matrix_table(run) for run in earlier]
    return "\n".join(sections)


if __name__ == "__main__":
    (BENCH / "RESULTS_lora.md").write_text(lora_results())
