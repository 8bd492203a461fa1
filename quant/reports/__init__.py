"""What the report and compare nodes show: the quantization report, its text and chart, image
metrics (PSNR/SSIM) and comparison pictures."""
