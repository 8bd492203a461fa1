"""bench/RESULTS.md, its LoRA section and its chart, built again from the committed results: the committed
pages are what the scripts make of the committed JSON and analysis (a stale page, or a script that no
longer runs on the results it was written for, fails here)."""
from pathlib import Path

from bench.lora_report import lora_results
from bench.report import build

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_the_lora_section_is_up_to_date():
    assert lora_results() == (BENCH / "RESULTS_lora.md").read_text()


def test_the_results_page_and_its_chart_are_built_from_the_committed_results(tmp_path):
    build(tmp_path / "RESULTS.md", tmp_path / "chart.png")
    assert (tmp_path / "RESULTS.md").read_text() == (BENCH / "RESULTS.md").read_text()
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
