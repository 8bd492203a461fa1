"""Where a benchmark run's GPU memory goes in torch's caching allocator: bench/lora_matrix.py with the allocator's
history recorded (torch.cuda.memory._record_memory_history) from the first weights it makes, which is after ComfyUI
and comfy-aimdo started, summarized when it ends:

  python devtools/allocator_history.py SUMMARY.json <bench/lora_matrix.py arguments>

The summary gives what was live at the peak and each code site's own peak, by the innermost frames of this pack and
ComfyUI that allocated it, and the segments torch held at the end. A recorded run is slower: its timings do not
count.
"""
import importlib.util
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
# frames that name a code site: this pack's and ComfyUI's
_SITE_PATHS = ("/quant/", "/nodes/", "/comfy/", "comfy_aimdo")
_MIB = 2 ** 20


def site(frames):
    """The allocating code site: up to three innermost frames of this pack or ComfyUI, else the innermost frame."""
    names = [f"{os.path.basename(f['filename'])}:{f['line']}:{f['name']}" for f in frames
             if any(path in f["filename"] for path in _SITE_PATHS)]
    if names:
        return " < ".join(names[:3])
    return f"{os.path.basename(frames[0]['filename'])}:{frames[0]['name']}" if frames else "?"


def _largest(sizes, count=25):
    return [f"{size / _MIB:.1f} MiB {key}" for key, size in sorted(sizes.items(), key=lambda kv: -kv[1])[:count]
            if size > 0]


def summarize(snapshot):
    """A torch.cuda.memory._snapshot() of device 0, summarized (MiB)."""
    live, by_site, site_peak = {}, defaultdict(int), defaultdict(int)
    total = peak = reserved = reserved_peak = 0
    at_peak = {}
    for event in snapshot["device_traces"][0]:
        action = event["action"]
        if action == "alloc":
            key = site(event.get("frames", []))
            live[event["addr"]] = (event["size"], key)
            total += event["size"]
            by_site[key] += event["size"]
            site_peak[key] = max(site_peak[key], by_site[key])
            if total > peak:
                peak, at_peak = total, dict(by_site)
        elif action == "free_completed" and event["addr"] in live:
            size, key = live.pop(event["addr"])
            total -= size
            by_site[key] -= size
        elif action == "segment_alloc":
            reserved += event["size"]
            reserved_peak = max(reserved_peak, reserved)
        elif action == "segment_free":
            reserved -= event["size"]
    segments = []
    for segment in snapshot.get("segments", []):
        if segment.get("device", 0) != 0:
            continue
        active = [block for block in segment.get("blocks", []) if block.get("state") == "active_allocated"]
        segments.append((segment["total_size"], sum(block["size"] for block in active),
                         sorted({site(block.get("frames", [])) for block in active})[:4]))
    segments.sort(key=lambda s: s[1] - s[0])
    return {"peak_mib": round(peak / _MIB, 1), "live_at_peak": _largest(at_peak), "site_peaks": _largest(site_peak),
            "live_at_end": _largest(dict(by_site)), "reserved_peak_mib": round(reserved_peak / _MIB, 1),
            "segments_at_end_mib": round(sum(s[0] for s in segments) / _MIB, 1),
            "segments_at_end_active_mib": round(sum(s[1] for s in segments) / _MIB, 1),
            "segments_at_end_most_idle": [f"{total / _MIB:.1f} MiB, {active / _MIB:.2f} active: {sites}"
                                          for total, active, sites in segments[:25]],
            "events": len(snapshot["device_traces"][0])}


def main():
    summary_path, matrix_args, command = sys.argv[1], sys.argv[2:], " ".join(["python"] + sys.argv)
    sys.path.insert(0, str(REPO / "bench"))
    spec = importlib.util.spec_from_file_location("lora_matrix", REPO / "bench" / "lora_matrix.py")
    matrix = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(matrix)
    make_weights = matrix.random_weights

    def recording_weights(*args, **kwargs):
        # not before: comfy-aimdo must start before this process touches CUDA
        torch.cuda.memory._record_memory_history(max_entries=400000, stacks="python")
        return make_weights(*args, **kwargs)
    matrix.random_weights = recording_weights
    exit_now = os._exit

    def summarize_and_exit(code):
        Path(summary_path).write_text(json.dumps({"command": command,
                                                  **summarize(torch.cuda.memory._snapshot())}, indent=1))
        exit_now(code)
    # lora_matrix leaves a DynamicVRAM run through os._exit (comfy-aimdo's teardown)
    os._exit = summarize_and_exit
    sys.argv = [str(REPO / "bench" / "lora_matrix.py")] + matrix_args
    matrix.main()
    summarize_and_exit(0)


if __name__ == "__main__":
    main()
