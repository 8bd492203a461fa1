"""What the pack's two pictures (quantization report, image comparison) draw with: Pillow, which
ComfyUI requires, so no chart library is added."""
import numpy as np
from PIL import ImageFont

BACKGROUND = (30, 30, 30)  # ComfyUI's dark canvas
TEXT = (230, 230, 230)
MUTED = (150, 150, 150)

# matplotlib's "inferno" at nine points: perceptually uniform and readable in grey; dark for
# small values, bright for large.
INFERNO = np.array([(0, 0, 4), (31, 12, 72), (85, 15, 109), (136, 34, 106), (186, 54, 85), (227, 89, 51),
                    (249, 140, 10), (249, 201, 50), (252, 255, 164)], dtype=np.float64)


def colormap(values):
    """values in 0..1 (clipped), any shape -> uint8 RGB with one more trailing axis."""
    values = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    positions = np.linspace(0.0, 1.0, len(INFERNO))
    return np.stack([np.interp(values, positions, INFERNO[:, c]) for c in range(3)], axis=-1).round().astype(np.uint8)


def font(size):
    # the scalable built-in font (Pillow 10.1+): the same letters on every machine, no font file
    return ImageFont.load_default(size=size)


def fitted(draw, text, text_font, width):
    """text, shortened with an ellipsis where it is wider than `width` pixels."""
    if draw.textlength(text, font=text_font) <= width:
        return text
    while text and draw.textlength(text + "…", font=text_font) > width:
        text = text[:-1]
    return text + "…"
