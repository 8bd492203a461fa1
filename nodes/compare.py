"""Compare Images: two images side by side with their amplified difference, PSNR and SSIM."""
import torch

from ..quant.reports.compare_picture import comparison_pictures
from ..quant.reports.image_metrics import compare_images
from .report import CATEGORY


class SD35FP8CompareImages:
    DESCRIPTION = ("Puts image_a and image_b side by side with their difference, amplified so that small "
                   "differences show, and its scale bar; gives PSNR and SSIM of image_b against image_a for each "
                   "image of the batch and their mean (SSIM as scikit-image: 11x11 Gaussian window, sigma 1.5). "
                   "For example full precision (policy off) against FP8, same seed and prompt.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("comparison", "metrics")
    FUNCTION = "compare"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image_a": ("IMAGE", {"tooltip": "the reference, e.g. full precision"}),
            "image_b": ("IMAGE", {"tooltip": "compared with image_a: same width, height and batch size"}),
            "label_a": ("STRING", {"default": "A"}),
            "label_b": ("STRING", {"default": "B"}),
            "difference_scale": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.001, "tooltip":
                                 "the difference shown at full brightness (pixel values 0..1): 0.05 shows it 20x "
                                 "amplified. 0: the largest difference in the batch, rounded up to 1, 2 or 5 x 10^k. "
                                 "Set it to compare several pictures on one scale."}),
        }}

    def compare(self, image_a, image_b, label_a="A", label_b="B", difference_scale=0.0):
        comparison = compare_images(image_a, image_b)
        pictures = comparison_pictures(image_a, image_b, comparison, label_a, label_b, difference_scale)
        return torch.from_numpy(pictures).float().div(255), comparison.summary(label_a, label_b)


NODE_CLASS_MAPPINGS = {"SD35FP8CompareImages": SD35FP8CompareImages}
NODE_DISPLAY_NAME_MAPPINGS = {"SD35FP8CompareImages": "Compare Images (PSNR, SSIM)"}
