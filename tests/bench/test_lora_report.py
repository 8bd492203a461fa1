"""bench/lora_report.py's criteria from a LoRA matrix run: s/step and, for cells profiled step by step,
the LoRA's cost in GPU time (the wall time of an eager step can be set by the host)."""
import pytest

from bench.lora_report import matrix_table, verdicts


def _cell(lora, s_per_step, gpu_ms=None):
    cell = {"variant": "ours_fp8", "lora": lora, "s_per_step": s_per_step, "device_in_use_gib": 9.0}
    if gpu_ms is not None:
        # the first step holds the factor searches and autotuning: left out of the median
        cell["profile_per_step"] = [{"gpu_ms": 3000.0}] + [{"gpu_ms": ms} for ms in gpu_ms]
    return cell


@pytest.fixture
def run():
    return {"label": "0.33 DynamicVRAM", "vram_cap_gib": 0, "device": "NVIDIA H200", "torch": "2.11", "comfyui": "0.33.0",
            "model_patcher": "ModelPatcherDynamic", "model": "SD3.5 Large", "size": 1024, "cfg": 4.5, "batch": 2,
            "sampler": "euler", "steps": 8, "lora_rank": 16, "command": "python bench/lora_matrix.py",
            "results": [_cell("none", 0.160, [155.0, 156.0, 155.5]),
                        _cell("one LoRA", 0.190, [161.0, 161.5, 162.0]),  # +3.9% GPU time
                        _cell("two stacked", 0.165, [170.0, 171.0, 172.0]),  # +10.0% GPU time
                        _cell("strength changed", 0.161)]}  # not profiled


def _rows(sessions):
    return dict(line.strip("| ").split(" | ") for line in verdicts(sessions).splitlines()[2:])


COST = "a LoRA costs at most 5% s/step (the newest session's tables of each host)"


def test_the_lora_cost_in_gpu_time_is_its_own_criterion(run):
    rows = _rows([[run]])
    assert rows["a LoRA costs at most 5% GPU time per step (profiled cells)"] == "1 of 2"
    # a profiled step's wall time is mostly the profiler's: no s/step verdict from a profiled cell or base
    assert rows[COST] == "no cells measured yet"


def test_wall_times_count_where_neither_cell_was_profiled(run):
    for cell in run["results"]:
        cell.pop("profile_per_step", None)
    assert _rows([[run]])[COST] == "2 of 3"


def test_a_newer_sessions_timing_of_a_host_replaces_the_older_ones(run):
    for cell in run["results"]:
        cell.pop("profile_per_step", None)
        cell["latent_error"] = 0.07
    newer = dict(run, results=[_cell("none", 0.100), _cell("one LoRA", 0.104), _cell("two stacked", 0.106)])
    other_host = dict(run, label="0.3.75")
    rows = _rows([[newer], [run, other_host]])
    # the newer session's 2 cells of 0.33, and 0.3.75's 3, which no newer session timed
    assert rows[COST] == "3 of 5"
    # errors count in every current table
    assert rows["latent error with a LoRA within 0.01 of the same variant without"] == "6 of 6"


def test_profiled_cells_show_their_gpu_time_and_its_cost(run):
    table = matrix_table(run)
    assert "| 155.5 | 0.160 |" in table and "| 161.5 (+3.9%) |" in table and "| 171.0 (+10.0%) |" in table
    strength_row = next(line for line in table.splitlines() if "| strength changed |" in line)
    assert strength_row.split("|")[9].strip() == ""  # measured without the profiler: no GPU time


def test_counted_cells_show_the_host_probes_per_round(run):
    counted = [{"issue_s": 0.15, "host_probe_s": 0.0009, "launch_probe_s": 0.0011},
               {"issue_s": 0.16, "host_probe_s": 0.0008, "launch_probe_s": 0.0013}]
    run["results"][0].update(count_per_step=[{"issue_s": 5.0, "host_probe_s": 0.5, "launch_probe_s": 0.5}, *counted])
    row = next(line for line in matrix_table(run).splitlines() if "| none |" in line)
    # the first step (factor searches, a state change) is left out of the medians
    assert row.rstrip(" |").endswith("0.160, 0.155, probe 0.85 ms, launches 1.20 ms")


def test_compiled_cells_name_how_they_were_compiled(run):
    run["results"] = [dict(_cell("none", 0.08), compiled="cuda_graphs"), dict(_cell("one LoRA", 0.085), compiled=True),
                      _cell("none", 0.1)]
    labels = [line.split(" | ")[0].strip("| ") for line in matrix_table(run).splitlines() if "| ours FP8" in line]
    assert labels == ["ours FP8 matmul (compiled with CUDA graphs)", "ours FP8 matmul (TorchCompileModel)",
                      "ours FP8 matmul"]


def test_a_run_cut_short_counts_its_single_round_cells_in_s_per_step_only(run):
    # a job's time limit stopped the second round after "none": the other cells have one round
    run["results"] = [dict(_cell("none", 0.100), s_per_step_rounds=[0.100, 0.101]), _cell("one LoRA", 0.104),
                      _cell("two stacked", 0.110)]
    rows = _rows([[run]])
    assert rows[COST] == "1 of 2"
    assert rows["the same, fastest round against fastest round (tables with rounds)"] == "no cells measured yet"


GPU_COST = "a LoRA costs at most 5% GPU time per step (profiled cells)"


def test_a_newer_profiled_session_replaces_older_gpu_times_but_not_wall_times(run):
    timed = dict(run, results=[_cell("none", 0.100), _cell("one LoRA", 0.104), _cell("two stacked", 0.103)])
    profiled = dict(run, results=[_cell("none", 0.2, [100.0, 100.0]), _cell("one LoRA", 0.2, [106.0, 106.0])])
    rows = _rows([[profiled], [timed, run]])
    # the older session's wall times still count: the newer one only profiled this host
    assert rows[COST] == "2 of 2"
    # its GPU times replace the older session's (1 of 2 there)
    assert rows[GPU_COST] == "0 of 1"


def test_a_capped_run_of_ours_alone_leaves_the_comparison_with_stock_out(run):
    run["vram_cap_gib"] = 8.0
    run["results"].append(dict(_cell("LoRA removed", 0.16), bit_equal_to_none=True))
    rows = _rows([[run]])
    assert rows["under the 8 GiB cap, ours FP8 no slower than stock fp8_e4m3fn (first run, none, one LoRA)"] == \
        "no cells measured yet"
    assert rows["LoRA removed gives the unpatched output bit for bit"] == "1 of 1"
