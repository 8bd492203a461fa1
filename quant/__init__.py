"""The engine: FP8 scales, policies, reading every SD3.5 file format and writing FP8 files, in
plain PyTorch (no ComfyUI). `python -m quant convert IN OUT` is its command line (__main__.py)."""
