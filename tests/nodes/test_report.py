"""SD3.5 FP8 Quantization Report inside the real ComfyUI (in-process), on models from our loaders."""
import pytest
import torch

from devtools.tiny_sd3 import mmdit_state_dict, write_checkpoint, write_diffusion_model
from tests.nodes.test_loaders import load_checkpoint, load_diffusion_model


def run_report(pack, model):
    return pack.NODE_CLASS_MAPPINGS["SD35FP8QuantizationReport"]().report(model)


@pytest.fixture
def checkpoint(models_dir):
    write_checkpoint(models_dir / "checkpoints" / "report.safetensors", clip_l=False, vae=False,
                     seed=int(torch.randint(0, 10**6, ())))
    return "report.safetensors"


def test_chart_and_summary_come_from_the_loaders_report(pack, checkpoint):
    model, _, _ = load_checkpoint(pack, checkpoint, "fp8_default")
    chart, summary = run_report(pack, model)
    origin = model.model.sd35_fp8_origin
    assert chart.dtype == torch.float32 and chart.ndim == 4 and chart.shape[0] == 1 and chart.shape[3] == 3
    expected = pack.quant.reports.report_chart.report_chart(origin.report, origin.model_name)
    assert torch.equal((chart[0] * 255).round().to(torch.uint8), torch.from_numpy(expected))
    assert summary == pack.quant.reports.report_by_kind.report_text(origin.report, origin.model_name)
    assert "17 linears in FP8, 7 kept high precision" in summary and "  x fc1: 2 in FP8" in summary


def test_no_second_pass_over_the_weights(pack, checkpoint):
    """The node reads the report the loader measured: weights changed afterwards change nothing."""
    model, _, _ = load_checkpoint(pack, checkpoint, "fp8_default")
    chart, summary = run_report(pack, model)
    with torch.no_grad():
        for parameter in model.model.diffusion_model.parameters():
            parameter.zero_()
    chart_after, summary_after = run_report(pack, model.clone())  # what a patch node passes on
    assert torch.equal(chart, chart_after) and summary == summary_after


@pytest.mark.parametrize("policy,expected", [("off", "0 linears in FP8, 24 kept"),
                                             ("fp8_keep_adaln", "13 linears in FP8, 11 kept")])
def test_other_policies(pack, checkpoint, policy, expected):
    _, summary = run_report(pack, load_checkpoint(pack, checkpoint, policy)[0])
    assert expected in summary
    assert ("x adaLN: 2 kept" in summary) and ("x qkv: 2 kept" in summary) == (policy == "off")


def test_diffusion_model_loader(pack, models_dir):
    write_diffusion_model(models_dir / "diffusion_models" / "report_dm.safetensors", variant="medium")
    _, summary = run_report(pack, load_diffusion_model(pack, "report_dm.safetensors"))
    assert "x attn2 qkv: 1 in FP8" in summary


def test_a_model_not_from_our_loaders_is_refused(pack):
    import comfy.sd
    stock = comfy.sd.load_diffusion_model_state_dict(mmdit_state_dict("large", depth=2, prefix=""))
    with pytest.raises(pack.quant.errors.SD35FP8Error, match="does not come from Load SD3.5 Checkpoint"):
        run_report(pack, stock)
