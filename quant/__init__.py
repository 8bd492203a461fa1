"""The engine: FP8 scales, policies and checkpoint reading, in plain PyTorch (no ComfyUI)."""
