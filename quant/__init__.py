"""The engine: FP8 scales, policies, reading every SD3.5 file format and writing FP8 files, in
plain PyTorch (no ComfyUI); also what the report and compare nodes show (PSNR/SSIM with kornia,
pictures with Pillow). `python -m quant convert IN OUT` is its command line (__main__.py)."""
