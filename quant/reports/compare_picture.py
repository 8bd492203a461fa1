"""The Compare Images picture: image A, image B and their amplified difference side by side, the
difference's scale bar under it, PSNR and SSIM under the images. One picture per pair of a batch,
all with the same difference scale."""
import math

import numpy as np
from PIL import Image, ImageDraw

from .drawing import BACKGROUND, TEXT, colormap, fitted, font
from .image_metrics import ImageComparison

# Small images (tests, previews) are enlarged, pixel for pixel, so that the labels fit above them.
MIN_PANEL_WIDTH = 256
ONE_8BIT_LEVEL = 1 / 255


def _rgb(images):
    images = np.asarray(images.detach().cpu().float())
    return np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images[..., :3]


def mean_abs_difference(rgb_a, rgb_b):
    """|A - B| per pixel, the mean over R, G, B: (batch, height, width)."""
    return np.abs(rgb_a.astype(np.float64) - rgb_b.astype(np.float64)).mean(-1)


def difference_full_scale(difference, requested=0.0):
    """The difference drawn at full brightness: `requested` when above 0, else the batch's largest
    difference rounded up to 1, 2 or 5 x 10^k (at least one 8-bit level)."""
    if requested > 0:
        return float(requested)
    largest = max(float(difference.max()), ONE_8BIT_LEVEL)
    power = 10.0 ** math.floor(math.log10(largest))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= largest * (1 - 1e-9))


def _enlarged(pixels, factor):
    return np.repeat(np.repeat(pixels, factor, axis=0), factor, axis=1)


def comparison_pictures(images_a, images_b, comparison: ImageComparison, label_a="A", label_b="B",
                        full_scale=0.0):
    """IMAGE tensors (batch, height, width, channels, 0..1) of the same shape -> uint8 array
    (batch, picture height, picture width, 3)."""
    a, b = _rgb(images_a), _rgb(images_b)
    difference = mean_abs_difference(a, b)
    full_scale = difference_full_scale(difference, full_scale)
    height, width = a.shape[1:3]
    factor = max(1, math.ceil(MIN_PANEL_WIDTH / width))
    panel_w, panel_h = width * factor, height * factor
    size = max(14, round(panel_h / 40))
    text_font, margin = font(size), size
    header = round(size * 1.6)
    bar_top = margin + header + panel_h + margin
    picture_w, picture_h = 3 * panel_w + 4 * margin, bar_top + size + round(size * 1.6) + margin
    columns = [margin + i * (panel_w + margin) for i in range(3)]
    bar = colormap(np.broadcast_to(np.linspace(0, 1, panel_w), (size, panel_w)))
    pictures = []
    for i in range(a.shape[0]):
        picture = Image.new("RGB", (picture_w, picture_h), BACKGROUND)
        draw = ImageDraw.Draw(picture)
        panels = [(a[i] * 255).round().clip(0, 255).astype(np.uint8), (b[i] * 255).round().clip(0, 255).astype(np.uint8),
                  colormap(difference[i] / full_scale)]
        titles = [f"A: {label_a}", f"B: {label_b}", f"|A - B| x{1 / full_scale:.3g}, mean of R, G, B"]
        for x, pixels, title in zip(columns, panels, titles):
            draw.text((x, margin), fitted(draw, title, text_font, panel_w), fill=TEXT, font=text_font)
            picture.paste(Image.fromarray(_enlarged(pixels, factor)), (x, margin + header))
        batch = f"image {i + 1} of {a.shape[0]}: " if a.shape[0] > 1 else ""
        scores = f"{batch}PSNR {comparison.psnr_db[i]:.2f} dB, SSIM {comparison.ssim[i]:.4f}"
        draw.text((columns[0], bar_top), fitted(draw, scores, text_font, 2 * panel_w + margin), fill=TEXT, font=text_font)
        picture.paste(Image.fromarray(bar), (columns[2], bar_top))
        for fraction, anchor in ((0.0, "la"), (0.5, "ma"), (1.0, "ra")):
            draw.text((columns[2] + fraction * panel_w, bar_top + size + size // 4), f"{fraction * full_scale:.3g}",
                      fill=TEXT, font=text_font, anchor=anchor)
        pictures.append(np.array(picture))
    return np.stack(pictures)
