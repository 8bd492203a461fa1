"""What tests, benchmarks and scripts share, outside the pack's code and outside the tests: the
ComfyUI host (in-process) and a ComfyUI server, tiny random-weight SD3.5 files and LoRAs with
the real key layout, numerics. Importing it makes the checkout importable as `sd35_fp8`
(pack_import.py)."""
import pack_import  # noqa: F401
