"""A QuantReport arranged for people: the joint blocks' linears as a grid (layer kind x block), the
other layers apart, weight error as SQNR, and the text the report node prints. Only reads the
report the loader computed: no pass over the weights."""
import math
import re
import statistics
from dataclasses import dataclass

from .report import GIB, QuantReport

BLOCK_LAYER = re.compile(r"joint_blocks\.(\d+)\.(x_block|context_block)\.(.+)")
STREAMS = {"x_block": "x", "context_block": "context"}
# Display order and short names of the linears in a joint block; anything else follows them.
KINDS = {"attn.qkv": "qkv", "attn.proj": "proj", "attn2.qkv": "attn2 qkv", "attn2.proj": "attn2 proj",
         "mlp.fc1": "fc1", "mlp.fc2": "fc2", "adaLN_modulation.1": "adaLN"}


def sqnr_db(weight_rel_error):
    """Signal-to-quantization-noise ratio of a weight, -20 log10(||W8 - W|| / ||W||): inf for a
    kept layer, None where the error is not known (FP8 taken as stored in the file)."""
    if weight_rel_error is None:
        return None
    return math.inf if weight_rel_error == 0 else -20 * math.log10(weight_rel_error)


@dataclass(frozen=True)
class KindRow:
    label: str  # "x qkv", "context adaLN"
    cells: tuple  # one per joint block: the LayerReport, or None where the block has no such layer


@dataclass(frozen=True)
class BlockGrid:
    depth: int
    rows: tuple  # KindRow
    other_layers: tuple  # LayerReport of layers outside the joint blocks


def block_grid(report: QuantReport) -> BlockGrid:
    found, other_layers = {}, []
    for layer in report.layers:
        match = BLOCK_LAYER.fullmatch(layer.name)
        if match is None:
            other_layers.append(layer)
        else:
            found[(match[2], match[3], int(match[1]))] = layer
    depth = 1 + max((block for _, _, block in found), default=-1)
    kinds = sorted({(stream, kind) for stream, kind, _ in found},
                   key=lambda sk: (list(STREAMS).index(sk[0]), list(KINDS).index(sk[1]) if sk[1] in KINDS else len(KINDS), sk[1]))
    rows = tuple(KindRow(f"{STREAMS[stream]} {KINDS.get(kind, kind)}",
                         tuple(found.get((stream, kind, block)) for block in range(depth))) for stream, kind in kinds)
    return BlockGrid(depth, rows, tuple(other_layers))


def _percent(error):
    return f"{error:.2%}"


def _row_line(row: KindRow):
    layers = [layer for layer in row.cells if layer is not None]
    measured = [(layer.weight_rel_error, block) for block, layer in enumerate(row.cells)
                if layer is not None and layer.quantized and layer.weight_rel_error is not None]
    parts = []
    if measured:
        worst, worst_block = max(measured)
        median = statistics.median(error for error, _ in measured)
        parts.append(f"{len(measured)} in FP8, weight error median {_percent(median)}, worst {_percent(worst)} "
                     f"(block {worst_block}), SQNR {sqnr_db(median):.1f} dB median, {sqnr_db(worst):.1f} worst")
    stored = sum(1 for layer in layers if layer.quantized and layer.weight_rel_error is None)
    if stored:
        parts.append(f"{stored} FP8 as stored in the file (error unknown)")
    kept = sum(1 for layer in layers if not layer.quantized)
    if kept:
        parts.append(f"{kept} kept")
    return f"  {row.label}: " + "; ".join(parts)


def _grouped_name(name):
    return BLOCK_LAYER.sub(lambda m: f"joint_blocks.*.{m[2]}.{m[3]}", name)


def kept_by_reason(report: QuantReport):
    """[(reason, [layer names, joint-block layers as joint_blocks.*.<...> (count)])] in report order."""
    reasons = {}
    for layer in report.kept_layers:
        names = reasons.setdefault(layer.reason, {})
        names[_grouped_name(layer.name)] = names.get(_grouped_name(layer.name), 0) + 1
    return [(reason, [f"{name} ({count})" if "*" in name else name for name, count in names.items()])
            for reason, names in reasons.items()]


def memory_line(report: QuantReport):
    change = report.bytes_after / report.bytes_before - 1 if report.bytes_before else 0.0
    return (f"MMDiT weights: {report.bytes_before / GIB:.2f} GiB in the compute dtype -> "
            f"{report.bytes_after / GIB:.2f} GiB as loaded ({change:+.0%})")


def report_text(report: QuantReport, model_name: str) -> str:
    grid = block_grid(report)
    lines = [report.summary(model_name), memory_line(report), "",
             f"Joint-block linears by kind ({grid.depth} blocks); weight error = ||W_fp8 - W|| / ||W||, "
             "SQNR = -20 log10(error):"]
    lines += [_row_line(row) for row in grid.rows]
    other_fp8 = [layer for layer in grid.other_layers if layer.quantized]
    lines += [f"  {layer.name}: FP8, weight error "
              f"{'unknown (as stored)' if layer.weight_rel_error is None else _percent(layer.weight_rel_error)}"
              for layer in other_fp8]
    lines += ["", "Kept in the compute dtype, and why:"]
    lines += [f"  {reason}: {', '.join(names)}" for reason, names in kept_by_reason(report)] or ["  nothing"]
    lines += ["", "As the loader computed it while loading; LoRAs applied to the MODEL later are not included."]
    return "\n".join(lines)
