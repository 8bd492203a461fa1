"""The quantization report as a picture: weight SQNR of every joint-block linear (layer kind x
block), which layers are FP8 and which are kept and why, memory before and after."""
import math

import numpy as np
from PIL import Image, ImageDraw

from .drawing import BACKGROUND, MUTED, TEXT, colormap, fitted, font
from .report import GIB, QuantReport
from .report_by_kind import block_grid, kept_by_reason, memory_line, sqnr_db

WIDTH = 1600
MARGIN = 24
LABEL_WIDTH = 150
CELL_HEIGHT = 26
MAX_CELL_WIDTH = 72
# One fixed colour scale, so that charts of different models compare at a glance; per-channel
# e4m3 weights sit near 31-32 dB (2.5-3% error).
SQNR_RANGE_DB = (20.0, 40.0)
KEPT = (96, 100, 108)  # not a pure grey: anti-aliased text makes every pure grey
STORED = (40, 110, 150)
ABSENT_OUTLINE = (60, 60, 60)
BEFORE_BAR, AFTER_BAR = (120, 120, 120), (249, 140, 10)


def sqnr_colour(sqnr):
    """Bright for low SQNR (large error), dark for high, as the difference map of Compare Images."""
    low, high = SQNR_RANGE_DB
    return tuple(int(c) for c in colormap((high - sqnr) / (high - low)))


def _text_colour(fill):
    return (0, 0, 0) if 0.299 * fill[0] + 0.587 * fill[1] + 0.114 * fill[2] > 140 else (255, 255, 255)


def _cell(layer):
    """(fill, text) of one grid cell; None where the block has no such layer."""
    if layer is None:
        return None
    if not layer.quantized:
        return KEPT, "kept"
    sqnr = sqnr_db(layer.weight_rel_error)
    return (STORED, "fp8") if sqnr is None else (sqnr_colour(sqnr), f"{sqnr:.1f}")


def report_chart(report: QuantReport, model_name: str) -> np.ndarray:
    """uint8 array (height, width, 3)."""
    grid = block_grid(report)
    title_font, text_font, small_font = font(26), font(17), font(12)
    cell_w = min(MAX_CELL_WIDTH, (WIDTH - 2 * MARGIN - LABEL_WIDTH) // max(grid.depth, 1))
    reasons = kept_by_reason(report)
    fp8_outside = [layer.name for layer in grid.other_layers if layer.quantized]
    grid_top = MARGIN + 110
    legend_top = grid_top + 20 + CELL_HEIGHT * len(grid.rows) + 20
    lists_top = legend_top + 70
    memory_top = lists_top + 28 * (len(reasons) + bool(fp8_outside) + 1) + 16
    picture = Image.new("RGB", (WIDTH, memory_top + 120), BACKGROUND)
    draw = ImageDraw.Draw(picture)
    text_width = WIDTH - 2 * MARGIN

    draw.text((MARGIN, MARGIN), fitted(draw, f"{model_name}: FP8 quantization report", title_font, text_width),
              fill=TEXT, font=title_font)
    layers = (f"policy {report.policy} ({report.granularity} scales): {len(report.quantized_layers)} linears in FP8, "
              f"{len(report.kept_layers)} kept in the compute dtype")
    draw.text((MARGIN, MARGIN + 40), fitted(draw, layers, text_font, text_width), fill=TEXT, font=text_font)
    heading = ("Weight SQNR of each joint-block linear, dB = -20 log10(||W_fp8 - W|| / ||W||); higher is better"
               if grid.rows else "No joint-block linears in this report")
    draw.text((MARGIN, MARGIN + 76), fitted(draw, heading, text_font, text_width), fill=MUTED, font=text_font)

    grid_left = MARGIN + LABEL_WIDTH
    step = max(1, math.ceil(24 / cell_w))
    for block in range(0, grid.depth, step):
        draw.text((grid_left + block * cell_w + cell_w / 2, grid_top), str(block), fill=MUTED, font=small_font,
                  anchor="ma")
    for r, row in enumerate(grid.rows):
        top = grid_top + 20 + r * CELL_HEIGHT
        draw.text((MARGIN, top + CELL_HEIGHT / 2), row.label, fill=TEXT, font=text_font, anchor="lm")
        for block, layer in enumerate(row.cells):
            box = (grid_left + block * cell_w, top, grid_left + (block + 1) * cell_w - 2, top + CELL_HEIGHT - 2)
            cell = _cell(layer)
            if cell is None:
                draw.rectangle(box, outline=ABSENT_OUTLINE)
                continue
            fill, label = cell
            draw.rectangle(box, fill=fill)
            if draw.textlength(label, font=small_font) <= cell_w - 4:
                draw.text(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), label, fill=_text_colour(fill),
                          font=small_font, anchor="mm")

    low, high = SQNR_RANGE_DB
    bar_w = 400
    bar = colormap(np.broadcast_to(np.linspace(0, 1, bar_w), (16, bar_w)))
    picture.paste(Image.fromarray(np.ascontiguousarray(bar)), (grid_left, legend_top))
    for fraction in (0.0, 0.25, 0.5, 0.75, 1.0):
        draw.text((grid_left + fraction * (bar_w - 1), legend_top + 20), f"{high - fraction * (high - low):.0f} dB",
                  fill=MUTED, font=small_font, anchor="ma")
    draw.text((MARGIN, legend_top), "FP8, SQNR", fill=TEXT, font=text_font)
    x = grid_left + bar_w + 40
    for fill, outline, label in ((KEPT, None, "kept in the compute dtype"),
                                 (STORED, None, "FP8 as stored in the file (error unknown)"),
                                 (None, ABSENT_OUTLINE, "no such layer in this block")):
        draw.rectangle((x, legend_top, x + 16, legend_top + 16), fill=fill, outline=outline)
        draw.text((x + 24, legend_top + 8), label, fill=TEXT, font=text_font, anchor="lm")
        x += 24 + draw.textlength(label, font=text_font) + 32

    draw.text((MARGIN, lists_top), "Kept in the compute dtype, and why:", fill=TEXT, font=text_font)
    lines = [f"{reason}: {', '.join(names)}" for reason, names in reasons]
    if fp8_outside:
        lines.append(f"FP8 outside the joint blocks: {', '.join(fp8_outside)}")
    for i, line in enumerate(lines):
        draw.text((MARGIN + 16, lists_top + 28 * (i + 1)), fitted(draw, line, text_font, text_width - 16),
                  fill=MUTED, font=text_font)

    draw.text((MARGIN, memory_top), memory_line(report), fill=TEXT, font=text_font)
    longest = max(report.bytes_before, report.bytes_after, 1)
    for i, (label, size, fill) in enumerate((("before", report.bytes_before, BEFORE_BAR),
                                             ("as loaded", report.bytes_after, AFTER_BAR))):
        top = memory_top + 34 + 36 * i
        draw.text((MARGIN, top + 13), label, fill=TEXT, font=text_font, anchor="lm")
        length = round((text_width - LABEL_WIDTH - 120) * size / longest)
        draw.rectangle((grid_left, top, grid_left + max(length, 1), top + 26), fill=fill)
        draw.text((grid_left + length + 10, top + 13), f"{size / GIB:.2f} GiB", fill=TEXT, font=text_font, anchor="lm")
    return np.array(picture)
