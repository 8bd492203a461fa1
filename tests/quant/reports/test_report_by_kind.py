import math

import pytest
import torch

from devtools.tiny_sd3 import mmdit_state_dict
from sd35_fp8.quant.policy import POLICIES
from sd35_fp8.quant.quantize import quantize_state_dict
from sd35_fp8.quant.quantized_weight import QuantizedWeight
from sd35_fp8.quant.reports.report_by_kind import block_grid, report_text, sqnr_db
from sd35_fp8.quant.scales import SCALE_SUFFIX

ROWS = ["x qkv", "x proj", "x attn2 qkv", "x attn2 proj", "x fc1", "x fc2", "x adaLN",
        "context qkv", "context proj", "context fc1", "context fc2", "context adaLN"]


def tiny_report(policy="fp8_default", variant="medium", depth=3):
    source = mmdit_state_dict(variant, depth=depth, prefix="", seed=int(torch.randint(0, 10**6, ())))
    return quantize_state_dict(source.items(), POLICIES[policy], compute_dtype=torch.bfloat16)


def stored_fp8_report():
    """A report of a model loaded from an FP8 file: its FP8 layers taken as stored."""
    state_dict, _ = tiny_report()
    stored = {name: QuantizedWeight(tensor, state_dict[name[: -len(".weight")] + SCALE_SUFFIX])
              if name[: -len(".weight")] + SCALE_SUFFIX in state_dict else tensor
              for name, tensor in state_dict.items() if not name.endswith(SCALE_SUFFIX)}
    return quantize_state_dict(stored.items(), POLICIES["fp8_default"], compute_dtype=torch.bfloat16)[1]


@pytest.mark.parametrize("error,sqnr", [(0.01, 40.0), (0.1, 20.0), (0.0, math.inf)])
def test_sqnr(error, sqnr):
    assert sqnr_db(error) == pytest.approx(sqnr)


def test_sqnr_of_a_layer_taken_as_stored_is_unknown():
    assert sqnr_db(None) is None


def test_grid_has_every_joint_block_linear_once():
    _, report = tiny_report()
    grid = block_grid(report)
    assert grid.depth == 3 and [row.label for row in grid.rows] == ROWS
    cells = {row.label: row.cells for row in grid.rows}
    assert [cell is not None for cell in cells["x attn2 qkv"]] == [True, False, False]  # attn2 in block 0 only
    assert [cell is not None for cell in cells["context fc2"]] == [True, True, False]  # the last context block is pre-only
    assert cells["x fc1"][2].name == "joint_blocks.2.x_block.mlp.fc1"
    in_grid = [cell.name for row in grid.rows for cell in row.cells if cell is not None]
    assert len(in_grid) + len(grid.other_layers) == len(report.layers) and len(set(in_grid)) == len(in_grid)
    assert {layer.name for layer in grid.other_layers} == {
        "t_embedder.mlp.0", "t_embedder.mlp.2", "y_embedder.mlp.0", "y_embedder.mlp.2", "context_embedder",
        "final_layer.linear", "final_layer.adaLN_modulation.1"}


def test_large_has_no_attn2_rows():
    _, report = tiny_report(variant="large", depth=2)
    assert [row.label for row in block_grid(report).rows] == [r for r in ROWS if "attn2" not in r]


def test_text_gives_each_kind_its_errors_and_each_kept_layer_its_reason():
    _, report = tiny_report("fp8_keep_adaln")
    text = report_text(report, "tiny")
    assert text.startswith(report.summary("tiny"))
    fc2 = [layer for layer in report.quantized_layers if layer.name.endswith("x_block.mlp.fc2")]
    worst = max(fc2, key=lambda layer: layer.weight_rel_error)
    assert (f"  x fc2: 3 in FP8, weight error median {sorted(l.weight_rel_error for l in fc2)[1]:.2%}, worst "
            f"{worst.weight_rel_error:.2%} (block {worst.name.split('.')[1]}), SQNR") in text
    assert "  x adaLN: 3 kept" in text and "  context adaLN: 3 kept" in text
    assert ("adaLN modulation kept by this policy: joint_blocks.*.context_block.adaLN_modulation.1 (3), "
            "joint_blocks.*.x_block.adaLN_modulation.1 (3)") in text
    assert "final projection: its error goes straight into the prediction: final_layer.linear" in text
    assert f"{report.bytes_before / 1024**3:.2f} GiB in the compute dtype" in text


def test_text_of_policy_off_and_of_stored_fp8():
    _, report = tiny_report("off")
    text = report_text(report, "tiny")
    assert "  x qkv: 3 kept" in text and "in FP8" not in text.split("\n", 1)[1]
    assert "attention or MLP linear kept by this policy: joint_blocks.*.context_block.attn.qkv (3)" in text
    stored = report_text(stored_fp8_report(), "tiny")
    assert "  x qkv: 3 FP8 as stored in the file (error unknown)" in stored
