"""Stock ComfyUI and this pack side by side, in one process on one GPU, through ComfyUI's own
sampling (comfy.sample.sample): seconds per step, peak memory, load time and error vs stock.

  python bench/sd35_bench.py --model large --weights gaussian --modes eager compiled --out bench/results
  python bench/sd35_bench.py --model large --vram-cap-gib 8 --variants stock_fp8 ours_fp8 --out bench/results
  python bench/sd35_bench.py --model medium --modes eager --variants ours_fp8 ours_fp8_comfy_qk_norm --out DIR
  python bench/sd35_bench.py --model medium --modes compiled cuda_graphs --variants stock_fp8_fast ours_fp8 --out DIR

Modes: eager; compiled (stock TorchCompileModel, inductor); cuda_graphs (this pack's TorchCompileModel
with CUDA graphs, on stock's variants too); cudagraphs_backend (stock TorchCompileModel's other backend:
CUDA graphs of the eager kernels, no Inductor).

Random weights at the real shapes (no weights can be downloaded); one JSON file per run, which
bench/report.py turns into bench/RESULTS.md and the chart.
"""
import argparse
import gc
import json
import platform
import statistics
import sys
import time
from contextlib import contextmanager, nullcontext
from unittest import mock
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import pack_import  # noqa: E402,F401  (the pack as `sd35_fp8`)
from devtools.comfy_host import import_comfy_in_process  # noqa: E402
from devtools.gpu_driver import nvidia_driver_version  # noqa: E402
from devtools.numerics import relative_error  # noqa: E402
from devtools.tiny_sd3 import mmdit_state_dict  # noqa: E402
from sd35_fp8.quant.reports.report import GIB  # noqa: E402

MODELS = {"large": dict(depth=38, pos_embed_max_size=192, attn2_blocks=set(), name="SD3.5 Large"),
          "medium": dict(depth=24, pos_embed_max_size=384, attn2_blocks=set(range(13)), name="SD3.5 Medium"),
          "tiny": dict(depth=2, pos_embed_max_size=32, attn2_blocks={0}, name="tiny (smoke test)")}
VARIANTS = ("stock_default", "stock_fp8", "stock_fp8_fast", "ours_weight_only", "ours_fp8")
# Run only when named, each an A/B of one change in one process: ours FP8 with its eager kernel calls
# through their custom ops, as before quant/kernels/opaque_op.py; ours FP8 with ComfyUI's q and k norms,
# as before nodes/qk_norm.py; ours FP8 with ComfyUI's transposed image tokens, as before
# nodes/token_layout.py; ours FP8 with ComfyUI's attention backend order, as before
# nodes/attention_backend.py; ours FP8 with ComfyUI's blocks, as before nodes/block_norm_quantize.py;
# ours FP8 with the conditioning copied to the GPU at every step, as before nodes/conditioning_on_device.py;
# ours FP8 with every activation quantization under torch.compile left to Inductor, as before
# quant/kernels/row_quantize.py; ours FP8 with ComfyUI's cast of the stored weight on every call, as before
# nodes/comfy_versions.py `_as_stored`; ours FP8 with torch._scaled_mm promoting its partial sums, as before
# quant/kernels/fp8_linear.py `FAST_ACCUMULATION`; ours FP8 with ComfyUI's block mixing (q and k norms, then
# the concatenations), as before nodes/joint_attention.py; ours FP8 with its attention rounded as an FP8
# attention kernel would round it, or with int8 q and k (bench/attention_emulation.py: accuracy only); ours
# FP8 with its attention in bf16, as before nodes/fp8_attention.py.
AB_VARIANTS = ("ours_fp8_custom_ops", "ours_fp8_comfy_qk_norm", "ours_fp8_transposed_tokens",
               "ours_fp8_comfy_attention", "ours_fp8_comfy_blocks", "ours_fp8_conditioning_per_step",
               "ours_fp8_inductor_quantize", "ours_fp8_comfy_cast", "ours_fp8_promoted_accum",
               "ours_fp8_comfy_mixing", "ours_fp8_attention_fp8_emulated", "ours_fp8_attention_int8_qk_emulated",
               "ours_fp8_bf16_attention")
EMULATED_ATTENTION = {"ours_fp8_attention_fp8_emulated": "fp8", "ours_fp8_attention_int8_qk_emulated": "int8"}
STOCK_OPTIONS = {"stock_default": {}, "stock_fp8": {"dtype": torch.float8_e4m3fn},
                 "stock_fp8_fast": {"dtype": torch.float8_e4m3fn, "fp8_optimizations": True}}
CFG, SAMPLER = 4.5, "euler"


def random_weights(model, kind, seed=0, device="cuda"):
    spec = MODELS[model]
    sd = mmdit_state_dict("medium" if spec["attn2_blocks"] else "large", spec["depth"], spec["pos_embed_max_size"],
                          seed=seed, prefix="", attn2_blocks=spec["attn2_blocks"], device=device)
    if kind == "heavy":
        # Log-normal per-row magnitudes and 1% of input channels ten times larger, in every
        # joint-block linear: the outliers real checkpoints have and Gaussian weights lack.
        generator = torch.Generator().manual_seed(seed + 1)
        for name, weight in sd.items():
            if name.startswith("joint_blocks.") and name.endswith(".weight") and weight.ndim == 2:
                rows = torch.exp(torch.randn(weight.shape[0], 1, generator=generator))
                columns = torch.ones(1, weight.shape[1])
                columns[0, torch.randperm(weight.shape[1], generator=generator)[: max(1, weight.shape[1] // 100)]] = 10
                sd[name] = (weight.float() * rows * columns).to(weight.dtype)
    return sd


def conditioning(seed=0):
    generator = torch.Generator().manual_seed(seed)
    def cond():
        return [[torch.randn(1, 154, 4096, generator=generator) * 0.5,
                 {"pooled_output": torch.randn(1, 2048, generator=generator) * 0.5}]]
    return cond(), cond()


def build(variant, weights, disable_dynamic=False):
    """The variant's ModelPatcher over weights, registered with ComfyUI the way loaders register theirs:
    ComfyUI 0.33's TorchCompileModel builds it again through that, outside DynamicVRAM."""
    from sd35_fp8.nodes.comfy_versions import build_diffusion_model, register_reload
    if variant in STOCK_OPTIONS:
        model = build_diffusion_model(dict(weights), dict(STOCK_OPTIONS[variant]), disable_dynamic)
    else:
        from sd35_fp8.nodes.model_loading import build_fp8_model
        from sd35_fp8.quant.policy import POLICIES
        total = sum(t.numel() for t in weights.values())
        model, _, _ = build_fp8_model(iter(weights.items()), len(weights), total, "bench", "random weights",
                                      POLICIES["fp8_default"], force_weight_only=variant == "ours_weight_only",
                                      fp8_attention=variant != "ours_fp8_bf16_attention",
                                      disable_dynamic=disable_dynamic)
        if variant == "ours_fp8_comfy_qk_norm":
            comfyui_qk_norms(model.model.diffusion_model)
        if variant == "ours_fp8_transposed_tokens":
            model.model.diffusion_model.x_embedder.norm = torch.nn.Identity()  # ComfyUI's patch embedding
        if variant == "ours_fp8_comfy_attention":
            model.model_options.get("transformer_options", {}).pop("optimized_attention_override", None)
        if variant == "ours_fp8_comfy_blocks":
            comfyui_blocks(model.model.diffusion_model)
        if variant == "ours_fp8_comfy_mixing":
            comfyui_block_mixing(model.model.diffusion_model)
        if variant in EMULATED_ATTENTION:
            from bench.attention_emulation import emulated_attention_override
            model.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = \
                emulated_attention_override(EMULATED_ATTENTION[variant])
        if variant == "ours_fp8_conditioning_per_step":
            import comfy.patcher_extension
            from sd35_fp8.nodes.conditioning_on_device import WRAPPER_KEY
            model.remove_wrappers_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY)
    register_reload(model, build, (variant, weights))
    return model


def comfyui_blocks(diffusion_model):
    """The blocks as ComfyUI builds them: norm, modulation and quantization apart (the variant
    ours_fp8_comfy_blocks)."""
    from comfy.ldm.modules.diffusionmodules.mmdit import DismantledBlock
    for module in diffusion_model.modules():
        if isinstance(module, DismantledBlock):
            module.__class__ = DismantledBlock


def comfyui_block_mixing(diffusion_model):
    """The joint blocks as ComfyUI builds them: q and k norms, then the concatenations (the variant
    ours_fp8_comfy_mixing)."""
    from comfy.ldm.modules.diffusionmodules.mmdit import JointBlock
    for module in diffusion_model.modules():
        if isinstance(module, JointBlock):
            module.__class__ = JointBlock


def comfyui_qk_norms(diffusion_model):
    """The q and k norms as ComfyUI builds them, not in one pass (the variant ours_fp8_comfy_qk_norm)."""
    from comfy.ldm.modules.diffusionmodules.mmdit import RMSNorm
    for module in diffusion_model.modules():
        if isinstance(module, RMSNorm):
            module.__class__ = RMSNorm


def torch_compile_model(model, backend="inductor"):
    """Stock TorchCompileModel on model, as a user's graph runs it."""
    from comfy_extras.nodes_torch_compile import TorchCompileModel
    return TorchCompileModel.execute(model, backend).result[0]


@contextmanager
def custom_ops_in_eager():
    """Every call of the pack's Triton kernels goes through its torch.library custom op, in eager too
    (the variant ours_fp8_custom_ops)."""
    from sd35_fp8.quant.kernels.opaque_op import OpaqueToCompile
    direct = OpaqueToCompile.__call__
    OpaqueToCompile.__call__ = lambda self, *args: (self.impl if self.op is None else self.op)(*args)
    try:
        yield
    finally:
        OpaqueToCompile.__call__ = direct


def variant_context(variant):
    """What a variant changes for as long as it runs, beyond the model it builds."""
    if variant == "ours_fp8_custom_ops":
        return custom_ops_in_eager()
    if variant == "ours_fp8_inductor_quantize":  # every width left to Inductor under torch.compile
        from sd35_fp8.quant.kernels import row_quantize
        return mock.patch.object(row_quantize, "INDUCTOR_ONE_PASS_COLS", sys.maxsize)
    if variant == "ours_fp8_comfy_cast":  # ComfyUI's cast of every stored weight, resident or not
        from sd35_fp8.nodes import comfy_versions
        return mock.patch.object(comfy_versions, "_as_stored", lambda layer, input: None)
    if variant == "ours_fp8_promoted_accum":
        from sd35_fp8.quant.kernels import fp8_linear
        return mock.patch.object(fp8_linear, "FAST_ACCUMULATION", False)
    return nullcontext()


def synchronize():
    if torch.cuda.is_available():  # bench/image_compare.py's smoke test samples on the CPU
        torch.cuda.synchronize()


def sample(model, size, steps, seed, positive, negative, step_times, issue_times=None):
    """step_times gets each step's time, from CUDA events recorded as ComfyUI reports the step (on the
    CPU from the clock): nothing waits for the GPU between steps, as in ComfyUI with previews off.
    issue_times, if given, gets each step's time on the host's clock, between the same two reports: far
    below the step's time, the host queued ahead of the GPU; close to it, the host either bounded the
    step or waited for the GPU within it."""
    import comfy.sample
    latent = torch.zeros(1, 16, size // 8, size // 8)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed))
    marks = []  # (host clock, CUDA event or None) at the start and at each step

    def mark(*_):
        event = None
        if torch.cuda.is_available():  # bench/image_compare.py's smoke test samples on the CPU
            event = torch.cuda.Event(enable_timing=True)
            event.record()
        marks.append((time.perf_counter(), event))

    synchronize()
    mark()
    latent = comfy.sample.sample(model, noise, steps, CFG, SAMPLER, "sgm_uniform", positive, negative, latent,
                                 seed=seed, callback=mark, disable_pbar=True)
    synchronize()
    for (host_before, before), (host_after, after) in zip(marks, marks[1:]):
        step_times.append(host_after - host_before if before is None else before.elapsed_time(after) / 1000)
        if issue_times is not None:
            issue_times.append(host_after - host_before)
    return latent


def one_forward(model, size, seed=0):
    import comfy.model_management
    comfy.model_management.load_models_gpu([model])
    generator = torch.Generator().manual_seed(seed)
    dtype = model.model.get_dtype()
    dtype = dtype if dtype in (torch.float16, torch.bfloat16, torch.float32) else model.model.manual_cast_dtype
    inputs = dict(x=torch.randn(2, 16, size // 8, size // 8, generator=generator), timesteps=torch.tensor([500.0, 500.0]),
                  context=torch.randn(2, 154, 4096, generator=generator) * 0.5, y=torch.randn(2, 2048, generator=generator) * 0.5)
    with torch.no_grad():
        return model.model.diffusion_model(**{k: v.to("cuda", dtype) for k, v in inputs.items()}).float().cpu()


# Inductor's kernels are named triton_{poi,red,per}_fused_<ops>, where <ops> may include
# "_scaled_mm" or "mm" of a neighbour: name prefixes are checked before the GEMM needles.
KERNEL_KINDS = (("triton: Inductor fused (elementwise, norms, quantization)", ("triton_",)),
                ("triton: this pack's kernels", ("_quantize_rows_kernel", "_gelu_quantize_rows_kernel", "_dequantize_kernel",
                                                 "_small_m_linear_kernel")),
                ("attention", ("flash", "fmha", "attention", "cudnn", "sdpa")),
                ("gemm", ("gemm", "xmma", "cutlass", "nvjet", "scaled_mm", "sm90", "cublas")))


def _kind(kernel_name):
    name = kernel_name.lower()
    for kind, needles in KERNEL_KINDS:
        if any(name.startswith(n) if n == "triton_" else n in name for n in needles):
            return kind
    return "other"


def _gpu_busy_ms(trace_path):
    """Union of kernel intervals and the span from first kernel start to last kernel end: their
    difference is the time the GPU waited for the CPU (launch gaps)."""
    events = json.loads(Path(trace_path).read_text())["traceEvents"]
    spans = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "kernel" and "dur" in e)
    busy, end = 0.0, float("-inf")
    for start, stop in spans:
        busy += max(0.0, stop - max(start, end))
        end = max(end, stop)
    return round(busy / 1000, 2), round((spans[-1][1] - spans[0][0]) / 1000, 2)


def _host_waits(trace_path, top=8):
    """The CUDA runtime calls that held the host longest, each with the innermost aten or Python op
    around it (the trace's CPU ops): where a step waits for the GPU, e.g. a synchronize or a copy
    to the CPU."""
    events = [e for e in json.loads(Path(trace_path).read_text())["traceEvents"] if "dur" in e]
    runtime = [e for e in events if e.get("cat") in ("cuda_runtime", "cuda_driver")]
    ops = sorted((e for e in events if e.get("cat") in ("cpu_op", "python_function")), key=lambda e: e["dur"])

    def enclosing(call):
        return next((op["name"] for op in ops if op["tid"] == call["tid"]
                     and op["ts"] <= call["ts"] and call["ts"] + call["dur"] <= op["ts"] + op["dur"]), None)

    by_name = {}
    for call in runtime:
        total, count = by_name.get(call["name"], (0.0, 0))
        by_name[call["name"]] = (total + call["dur"], count + 1)
    longest = sorted(runtime, key=lambda e: -e["dur"])[:top]
    return {"by_call_ms": {name: {"ms": round(total / 1000, 2), "calls": count} for name, (total, count)
                           in sorted(by_name.items(), key=lambda kv: -kv[1][0])[:top]},
            "longest": [{"ms": round(call["dur"] / 1000, 2), "call": call["name"], "inside": enclosing(call)}
                        for call in longest]}


def profile_steps(model, args, positive, negative, trace_path):
    """CUDA time of a sample of args.profile_steps steps by kernel kind, to compare with the floors in
    fp8.md. One step holds the sample's own setup too; with more, the trace shows what each later step
    waits for."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        sample(model, args.size, args.profile_steps, args.seed, positive, negative, [])
        torch.cuda.synchronize()
    totals, kernels = {}, []
    for event in prof.key_averages():
        ms = event.self_device_time_total / 1000
        if ms <= 0 or event.device_type != torch.autograd.DeviceType.CUDA:  # kernels, not the CPU ops that launched them
            continue
        kind = _kind(event.key)
        totals[kind] = totals.get(kind, 0.0) + ms
        kernels.append((ms, event.count, event.key[:160]))
    prof.export_chrome_trace(str(trace_path))
    busy_ms, span_ms = _gpu_busy_ms(trace_path)
    top = [{"ms": round(ms, 2), "calls": calls, "kernel": name} for ms, calls, name in sorted(kernels, reverse=True)[:30]]
    return {"steps": args.profile_steps,
            "by_kind_ms": {k: round(v, 2) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])},
            "gpu_busy_ms": busy_ms, "kernel_span_ms": span_ms, "top_kernels": top,
            "host_waits": _host_waits(trace_path)}


def python_profile_one_step(model, args, positive, negative):
    """Where the CPU spends an eager step (cProfile): the host side of a launch-bound step."""
    import cProfile
    import pstats
    profiler = cProfile.Profile()
    profiler.enable()
    sample(model, args.size, 1, args.seed, positive, negative, [])
    profiler.disable()
    stats = pstats.Stats(profiler).sort_stats("tottime")
    rows = [{"tottime_ms": round(tt * 1000, 2), "cumtime_ms": round(ct * 1000, 2), "calls": nc,
             "function": f"{Path(file).name}:{line}:{name}"}
            for (file, line, name), (_, nc, tt, ct, _) in stats.stats.items()]
    rows.sort(key=lambda r: -r["tottime_ms"])
    return {"total_ms": round(stats.total_tt * 1000, 1), "top": rows[:40]}


def run_variant(variant, mode, weights, args, positive, negative, references):
    import comfy.model_management
    started = time.perf_counter()
    model = build(variant, weights)
    comfy.model_management.load_models_gpu([model])
    torch.cuda.synchronize()
    load_seconds = time.perf_counter() - started
    result = {"variant": variant, "mode": mode, "load_s": round(load_seconds, 2),
              "dtype": str(model.model.get_dtype()).replace("torch.", "")}
    if mode == "compiled":
        model = torch_compile_model(model)
    elif mode == "cudagraphs_backend":
        model = torch_compile_model(model, "cudagraphs")
    elif mode == "cuda_graphs":
        from sd35_fp8.nodes.compile_cuda_graphs import compile_with_cuda_graphs
        model = compile_with_cuda_graphs(model)
    forward = one_forward(model, args.size) if mode == "eager" and not args.vram_cap_gib else None
    started = time.perf_counter()
    sample(model, args.size, 2, args.seed, positive, negative, [])  # warm-up (and compilation)
    result["warmup_s"] = round(time.perf_counter() - started, 1)
    torch._dynamo.utils.counters.clear()
    torch.cuda.reset_peak_memory_stats()
    # what stays allocated between runs (weights, anything a compiled model keeps), apart from the
    # peak's transients
    resident_gib = round(torch.cuda.memory_allocated() / GIB, 2)
    step_times, issue_times = [], []
    latent = sample(model, args.size, args.steps, args.seed, positive, negative, step_times, issue_times)
    result.update(s_per_step=round(statistics.median(step_times), 4), step_times=[round(t, 4) for t in step_times],
                  host_issue_s_per_step=round(statistics.median(issue_times), 4),
                  peak_gib=round(torch.cuda.max_memory_allocated() / GIB, 2), resident_gib=resident_gib,
                  recompiles=int(sum(torch._dynamo.utils.counters["recompiles"].values())),
                  model_gib=round(model.model_size() / GIB, 2))
    if forward is not None:
        references.setdefault("forward", forward)
        result["forward_error"] = round(relative_error(forward, references["forward"]), 4)
    if f"{variant}_{mode}" in args.profile:
        args.out.mkdir(parents=True, exist_ok=True)
        result["profile"] = profile_steps(model, args, positive, negative,
                                             args.out / f"trace_{args.model}_{variant}_{mode}.json")
    if f"{variant}_{mode}" in args.python_profile:
        result["python_profile"] = python_profile_one_step(model, args, positive, negative)
    references.setdefault("latent", latent)
    result["latent_error"] = round(relative_error(latent, references["latent"]), 4)
    print(json.dumps({k: v for k, v in result.items() if k != "step_times"}), flush=True)
    release_models()  # while this variant's model is still referenced
    return result


def release_models():
    """Unloads every model and drops what torch.compile keeps of them: on ComfyUI 0.33 ours compiled
    after stock compiled kept about stock's model size more allocated than its own model
    (bench/analysis.md, "Eleventh session")."""
    import comfy.model_management
    comfy.model_management.unload_all_models()
    torch._dynamo.reset()
    gc.collect()
    comfy.model_management.soft_empty_cache()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=MODELS, default="large")
    parser.add_argument("--weights", choices=("gaussian", "heavy"), default="gaussian")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS + AB_VARIANTS, default=list(VARIANTS))
    parser.add_argument("--modes", nargs="+", choices=("eager", "compiled", "cuda_graphs", "cudagraphs_backend"),
                        default=["eager", "compiled"])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vram-cap-gib", type=float, default=0, help="cap GPU memory (ComfyUI offloads the rest)")
    parser.add_argument("--only", nargs="*", default=[],
                        help="variant_mode pairs to run of --variants x --modes, e.g. ours_fp8_cuda_graphs")
    parser.add_argument("--profile", nargs="*", default=[], help="variant_mode names to profile, e.g. ours_fp8_compiled")
    parser.add_argument("--profile-steps", type=int, default=1, help="steps of the profiled sample")
    parser.add_argument("--python-profile", nargs="*", default=[],
                        help="variant_mode names whose host-side time is profiled (cProfile), e.g. ours_fp8_eager")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()

    import_comfy_in_process()
    import comfy.model_management
    import comfyui_version
    total_memory = torch.cuda.get_device_properties(0).total_memory
    if args.vram_cap_gib:
        comfy.model_management.EXTRA_RESERVED_VRAM = int(total_memory - args.vram_cap_gib * GIB)
        torch.cuda.set_per_process_memory_fraction(args.vram_cap_gib * GIB / total_memory)
    started = time.perf_counter()
    weights = random_weights(args.model, args.weights, args.seed)
    print(f"random weights: {sum(t.numel() for t in weights.values()) / 1e9:.3f}B params in "
          f"{time.perf_counter() - started:.0f} s", flush=True)
    positive, negative = conditioning(args.seed)
    run = {"model": MODELS[args.model]["name"], "weights": args.weights, "size": args.size, "steps": args.steps,
           "cfg": CFG, "batch": 2, "sampler": SAMPLER, "vram_cap_gib": args.vram_cap_gib,
           "device": torch.cuda.get_device_name(0), "driver": nvidia_driver_version(), "torch": torch.__version__,
           "comfyui": comfyui_version.__version__, "python": platform.python_version(),
           "allocator": torch.cuda.get_allocator_backend(),
           "command": " ".join(["python"] + sys.argv), "reference": "stock_default eager",
           # since the thirteenth session; before it, the harness waited for the GPU at every step
           "step_timing": "cuda_events", "results": []}
    references = {}
    # Every error is against stock ComfyUI's default (eager), so that runs first.
    runs = [("stock_default", "eager")] + [(v, m) for m in args.modes for v in args.variants
                                           if not args.only or f"{v}_{m}" in args.only]
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{args.model}_{args.weights}{'_cap%g' % args.vram_cap_gib if args.vram_cap_gib else ''}.json"
    for variant, mode in dict.fromkeys(runs):
        with variant_context(variant):
            run["results"].append(run_variant(variant, mode, weights, args, positive, negative, references))
        path.write_text(json.dumps(run, indent=1))  # after each variant: a run cut short keeps what it measured
    print("wrote", path)


if __name__ == "__main__":
    main()
