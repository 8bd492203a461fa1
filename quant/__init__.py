"""The engine: FP8 scales, policies, reading every SD3.5 file format and writing FP8 files, in
plain PyTorch (no ComfyUI); also what the report and compare nodes show (PSNR/SSIM with kornia,
pictures with Pillow). Its command line is __main__.py, which users run as
`python <pack>/convert_to_fp8.py IN OUT` from any folder."""
