"""SD3.5 FP8 Quantization Report: what the loader did to each layer, as a chart and as text."""
import torch

from ..quant.errors import SD35FP8Error
from ..quant.reports.report_by_kind import report_text
from ..quant.reports.report_chart import report_chart

CATEGORY = "utils/SD3.5 FP8"


class SD35FP8QuantizationReport:
    DESCRIPTION = ("What Load SD3.5 Checkpoint (FP8) or Load SD3.5 Diffusion Model (FP8) did to each layer of the "
                   "MMDiT: a chart of every joint-block linear's weight SQNR (layer kind x block), which layers are FP8 "
                   "and which stayed in the compute dtype and why, the memory before and after; and the same as text. "
                   "Read from what the loader measured while quantizing, without touching the weights again.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("chart", "summary")
    FUNCTION = "report"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL", {"tooltip": "a MODEL from this pack's loaders"})}}

    def report(self, model):
        origin = getattr(getattr(model, "model", None), "sd35_fp8_origin", None)
        if origin is None:
            raise SD35FP8Error("This MODEL does not come from Load SD3.5 Checkpoint (FP8) or Load SD3.5 Diffusion "
                               "Model (FP8), so there is no quantization report for it: connect one of those loaders "
                               "to the report node's model input.")
        chart = torch.from_numpy(report_chart(origin.report, origin.model_name)).float().div(255).unsqueeze(0)
        return chart, report_text(origin.report, origin.model_name)


NODE_CLASS_MAPPINGS = {"SD35FP8QuantizationReport": SD35FP8QuantizationReport}
NODE_DISPLAY_NAME_MAPPINGS = {"SD35FP8QuantizationReport": "SD3.5 FP8 Quantization Report"}
