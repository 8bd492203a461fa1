"""bench/image_compare.py end to end on the CPU with the tiny model (the GPU run uses the real shapes),
and the table bench/report.py makes of its results."""
import json
import math
import subprocess
import sys

from PIL import Image

from bench.report import image_compare_table
from devtools.comfy_host import REPO


def test_tiny_run_writes_results_pictures_and_the_table(tmp_path):
    subprocess.run([sys.executable, str(REPO / "bench" / "image_compare.py"), "--models", "tiny", "--size", "128",
                    "--steps", "2", "--out", str(tmp_path)], check=True, cwd=tmp_path, timeout=600)
    run = json.loads((tmp_path / "image_compare.json").read_text())
    assert [(r["model"], r["weights"]) for r in run["results"]] == [("tiny (smoke test)", "gaussian"),
                                                                     ("tiny (smoke test)", "heavy")]
    for result in run["results"]:
        assert result["preview_size"] == [16, 16]
        assert 0 < result["latent_error"] < 0.2  # FP8 moves the latent, a little
        assert math.isfinite(result["psnr_db"]) and 0 < result["ssim"] < 1
        assert 0 <= result["candidate_clipped_fraction"] < 0.05
        assert Image.open(tmp_path / result["picture"]).width > 3 * 256
    table = image_compare_table(run)
    first = run["results"][0]
    assert f"| tiny (smoke test) | gaussian | {first['latent_error']:.4f} | {first['psnr_db']:.2f} | {first['ssim']:.4f} |" in table
