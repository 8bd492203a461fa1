"""devtools/allocator_history.py: the summary of an allocator history puts each allocation at its code site and
finds the peak, each site's own peak and what stays live."""
from devtools.allocator_history import site, summarize

MIB = 2 ** 20


def _frames(line, name="f", path="/repo/sd35_fp8/quant/kernels/low_rank.py"):
    return [{"filename": path, "line": line, "name": name},
            {"filename": "/usr/lib/python3/threading.py", "line": 1, "name": "run"}]


def test_a_site_is_named_by_the_packs_and_comfyuis_frames_only():
    frames = _frames(90, "lora_beside") + [{"filename": "/c/comfy/model_patcher.py", "line": 7, "name": "load"}]
    assert site(frames) == "low_rank.py:90:lora_beside < model_patcher.py:7:load"
    assert site([{"filename": "/usr/lib/x.py", "line": 3, "name": "g"}]) == "x.py:g"


def test_the_summary_finds_the_peak_each_sites_peak_and_what_stays():
    trace = [{"action": "segment_alloc", "addr": 0, "size": 100 * MIB},
             {"action": "alloc", "addr": 1, "size": 10 * MIB, "frames": _frames(1)},
             {"action": "alloc", "addr": 2, "size": 30 * MIB, "frames": _frames(2)},
             {"action": "free_requested", "addr": 2, "size": 30 * MIB},
             {"action": "free_completed", "addr": 2, "size": 30 * MIB},
             {"action": "alloc", "addr": 3, "size": 5 * MIB, "frames": _frames(1)},
             {"action": "segment_alloc", "addr": 200, "size": 20 * MIB},
             {"action": "segment_free", "addr": 200, "size": 20 * MIB}]
    segments = [{"device": 0, "total_size": 100 * MIB,
                 "blocks": [{"size": 15 * MIB, "state": "active_allocated", "frames": _frames(1)},
                            {"size": 85 * MIB, "state": "inactive"}]}]
    summary = summarize({"device_traces": [trace], "segments": segments})
    assert summary["peak_mib"] == 40.0
    assert summary["live_at_peak"] == ["30.0 MiB low_rank.py:2:f", "10.0 MiB low_rank.py:1:f"]
    assert summary["site_peaks"] == ["30.0 MiB low_rank.py:2:f", "15.0 MiB low_rank.py:1:f"]
    assert summary["live_at_end"] == ["15.0 MiB low_rank.py:1:f"]
    assert summary["reserved_peak_mib"] == 120.0
    assert (summary["segments_at_end_mib"], summary["segments_at_end_active_mib"]) == (100.0, 15.0)
    assert summary["segments_at_end_most_idle"] == ["100.0 MiB, 15.00 active: ['low_rank.py:1:f']"]
