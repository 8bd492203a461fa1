import numpy as np
import pytest
import torch

from sd35_fp8.quant.reports.compare_picture import MIN_PANEL_WIDTH, comparison_pictures, difference_full_scale
from sd35_fp8.quant.reports.drawing import colormap
from sd35_fp8.quant.reports.image_metrics import compare_images


def pixels_of_colour(picture, colour):
    return int((picture == np.asarray(colour, dtype=np.uint8)).all(-1).sum())


def solid(batch, height, width, rgb):
    return torch.tensor(rgb, dtype=torch.float32).expand(batch, height, width, 3).contiguous()


def picture_of(images_a, images_b, **options):
    return comparison_pictures(images_a, images_b, compare_images(images_a, images_b), **options)


def test_both_images_and_the_difference_are_drawn():
    height, width = 32, 48
    red, blue = solid(1, height, width, (0.8, 0.0, 0.0)), solid(1, height, width, (0.0, 0.0, 0.8))
    [picture] = picture_of(red, blue)
    factor = MIN_PANEL_WIDTH // width + 1  # 48 px enlarged 6x to reach 256
    panel = height * factor * width * factor
    assert pixels_of_colour(picture, (204, 0, 0)) == panel and pixels_of_colour(picture, (0, 0, 204)) == panel
    # mean |A - B| over R, G, B = 1.6 / 3 everywhere; full scale rounds up to 1
    assert pixels_of_colour(picture, colormap(1.6 / 3)) >= panel


def test_identical_images_give_a_black_difference():
    images = torch.rand(2, 24, 24, 3)
    pictures = picture_of(images, images.clone())
    assert pictures.shape[0] == 2 and pictures.dtype == np.uint8
    panel = (24 * 11) ** 2  # 24 px enlarged 11x
    assert all(pixels_of_colour(picture, colormap(0.0)) >= panel for picture in pictures)
    assert not np.array_equal(pictures[0], pictures[1])


def test_one_scale_for_the_whole_batch():
    base = torch.full((2, 16, 16, 3), 0.5)
    shifted = base + torch.tensor([0.25, 0.0625]).view(2, 1, 1, 1)
    pictures = picture_of(base, shifted)
    # largest difference 0.25 -> full scale 0.5 for both images
    assert pixels_of_colour(pictures[0], colormap(0.5)) >= 256 ** 2
    assert pixels_of_colour(pictures[1], colormap(0.125)) >= 256 ** 2


def test_a_requested_scale_is_used():
    base = torch.full((1, 16, 16, 3), 0.5)
    [picture] = picture_of(base, base + 0.125, full_scale=0.25)
    assert pixels_of_colour(picture, colormap(0.5)) >= 256 ** 2


@pytest.mark.parametrize("largest,full_scale", [(0.037, 0.05), (0.05, 0.05), (0.11, 0.2), (0.7, 1.0), (0.0, 0.005)])
def test_full_scale_rounds_up(largest, full_scale):
    assert difference_full_scale(np.array([0.0, largest])) == pytest.approx(full_scale)


def test_large_images_are_not_enlarged():
    images = torch.rand(1, 300, 400, 3)
    [picture] = picture_of(images, images)
    assert picture.shape[1] > 3 * 400 and picture.shape[1] < 3 * 400 * 2
