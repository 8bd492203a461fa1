"""Tests, mirroring the modules. Importing this package makes the checkout importable as `sd35_fp8`
(pack_import.py), the engine's one name: sd35_fp8.quant."""
import pack_import  # noqa: F401
