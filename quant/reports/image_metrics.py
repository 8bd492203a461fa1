"""PSNR and SSIM between two batches of images in ComfyUI's layout (batch, height, width,
channels; values 0..1), one value per image.

Both come from kornia.metrics, a ComfyUI requirement (nothing more to install). SSIM is Wang et
al. (2004): an 11-tap Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, averaged over the pixels
whose window lies inside the image, the same as scikit-image's
structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
data_range=1.0, channel_axis=-1). On the CPU; the SSIM map in float32 (five times faster than
float64; measured within 4e-8 of scikit-image's float64 on 1024x1024 images), means and PSNR in
float64.
"""
from dataclasses import dataclass

import torch
from kornia.metrics import psnr as kornia_psnr
from kornia.metrics import ssim as kornia_ssim

from ..errors import SD35FP8Error

DATA_RANGE = 1.0
SSIM_WINDOW = 11


@dataclass(frozen=True)
class ImageComparison:
    psnr_db: tuple  # one per image; inf where the two images are identical
    ssim: tuple

    @property
    def mean_psnr_db(self):
        return sum(self.psnr_db) / len(self.psnr_db)

    @property
    def mean_ssim(self):
        return sum(self.ssim) / len(self.ssim)

    def summary(self, label_a="A", label_b="B"):
        lines = [f"{label_b} against {label_a}: PSNR (dB, pixel range 0..1) and SSIM (11x11 Gaussian window, "
                 "sigma 1.5, as scikit-image)"]
        lines += [f"image {i + 1}: PSNR {p:.2f} dB, SSIM {s:.4f}" for i, (p, s) in enumerate(zip(self.psnr_db, self.ssim))]
        lines.append(f"mean of {len(self.ssim)}: PSNR {self.mean_psnr_db:.2f} dB, SSIM {self.mean_ssim:.4f}")
        return "\n".join(lines)


def _describe(images):
    batch, height, width, channels = images.shape
    return f"{batch} image(s) of {width}x{height} with {channels} channels"


def check_same_size(images_a, images_b):
    if images_a.ndim != 4 or images_b.ndim != 4:
        raise SD35FP8Error(f"Compare Images takes two IMAGE inputs (batch, height, width, channels), got tensors of "
                           f"shapes {tuple(images_a.shape)} and {tuple(images_b.shape)}.")
    if images_a.shape != images_b.shape:
        raise SD35FP8Error(f"Compare Images needs two images of the same size and batch: image_a is "
                           f"{_describe(images_a)}, image_b is {_describe(images_b)}. Generate both at the same "
                           "width, height and batch size, or resize one (Upscale Image) before comparing.")
    if min(images_a.shape[1:3]) < SSIM_WINDOW:
        raise SD35FP8Error(f"Compare Images needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels for SSIM's "
                           f"window; these are {_describe(images_a)}.")


def _channels_first(images, dtype):
    return images.detach().to("cpu", dtype).permute(0, 3, 1, 2).contiguous()


def compare_images(images_a, images_b) -> ImageComparison:
    check_same_size(images_a, images_b)
    a, b = _channels_first(images_a, torch.float64), _channels_first(images_b, torch.float64)
    # kornia's psnr pools one MSE over whatever it is given: one image at a time.
    psnr = tuple(float(kornia_psnr(x, y, DATA_RANGE)) for x, y in zip(a, b))
    ssim_map = kornia_ssim(a.float(), b.float(), SSIM_WINDOW, DATA_RANGE, eps=0.0, padding="valid")
    return ImageComparison(psnr, tuple(float(s) for s in ssim_map.mean(dim=(1, 2, 3), dtype=torch.float64)))
