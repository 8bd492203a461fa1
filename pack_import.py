"""Makes this checkout importable as `sd35_fp8`, the package name ComfyUI gives the pack (its
custom_nodes folder, devtools/comfy_server.py), for code that runs outside ComfyUI: the
converter's script, tests, benchmarks and scripts. The engine then has one identity everywhere,
`sd35_fp8.quant`; nodes/ imports it relatively, so a pack installed under another folder name
(ComfyUI-Manager's `sd35-fp8`) still works. Importing this module does it."""
import importlib.util
import os
import sys

PACK_NAME = "sd35_fp8"
PACK_DIR = os.path.dirname(os.path.abspath(__file__))


def import_pack():
    """The pack as the package `sd35_fp8`, imported once a process; its __init__ loads the nodes
    only where ComfyUI is importable."""
    if PACK_NAME not in sys.modules:
        spec = importlib.util.spec_from_file_location(PACK_NAME, os.path.join(PACK_DIR, "__init__.py"),
                                                      submodule_search_locations=[PACK_DIR])
        pack = importlib.util.module_from_spec(spec)
        sys.modules[PACK_NAME] = pack
        spec.loader.exec_module(pack)
    return sys.modules[PACK_NAME]


import_pack()
