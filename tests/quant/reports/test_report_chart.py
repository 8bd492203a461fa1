import numpy as np

from sd35_fp8.quant.reports.report_by_kind import sqnr_db
from sd35_fp8.quant.reports.report_chart import CELL_HEIGHT, KEPT, STORED, WIDTH, report_chart, sqnr_colour
from tests.quant.reports.test_report_by_kind import stored_fp8_report, tiny_report

LEGEND_SQUARE = 17 * 17  # each legend entry: a 16 px square drawn with both edges included


def pixels_of_colour(picture, colour):
    return int((picture == np.asarray(colour, dtype=np.uint8)).all(-1).sum())


def test_every_fp8_layer_is_drawn_in_the_colour_of_its_sqnr():
    _, report = tiny_report()
    picture = report_chart(report, "tiny")
    assert picture.dtype == np.uint8 and picture.shape[1:] == (WIDTH, 3)
    for layer in report.quantized_layers:
        assert pixels_of_colour(picture, sqnr_colour(sqnr_db(layer.weight_rel_error))) > 0, layer.name
    assert pixels_of_colour(picture, KEPT) == LEGEND_SQUARE  # no joint-block linear kept: only the legend


def test_kept_layers_are_grey():
    _, report = tiny_report("fp8_keep_adaln")
    picture = report_chart(report, "tiny")
    kept_cells = 3 + 3  # adaLN of the x and context streams in three blocks
    cell_area = (72 - 1) * (CELL_HEIGHT - 1)  # three blocks: the widest cells
    # each kept cell is grey but for its "kept" label
    assert pixels_of_colour(picture, KEPT) > LEGEND_SQUARE + kept_cells * cell_area * 0.7


def test_layers_taken_as_stored_have_their_own_colour():
    picture = report_chart(stored_fp8_report(), "tiny")
    assert pixels_of_colour(picture, STORED) > LEGEND_SQUARE + 10 * CELL_HEIGHT


def test_low_sqnr_is_bright_and_high_sqnr_dark():
    assert sum(sqnr_colour(22.0)) > sum(sqnr_colour(31.0)) > sum(sqnr_colour(39.0))
    assert sqnr_colour(10.0) == sqnr_colour(20.0) and sqnr_colour(60.0) == sqnr_colour(40.0)


def test_policy_and_memory_change_the_picture():
    _, fp8 = tiny_report()
    _, off = tiny_report("off")
    assert not np.array_equal(report_chart(fp8, "tiny")[:200], report_chart(off, "tiny")[:200])
