"""The SD3.5 FP8 converter, from any working directory, without ComfyUI (torch and safetensors only):

    python /path/to/ComfyUI/custom_nodes/<this pack>/convert_to_fp8.py IN OUT [--policy ...] [--granularity ...] [--overwrite]

`--help` lists the options; the command line itself is quant/__main__.py."""
import os
import sys

if __name__ == "__main__":
    # The portable Windows build's Python (python_embeded, with a ._pth file) does not put the
    # script's folder on sys.path: this pack must be found from anywhere.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import pack_import  # noqa: F401  (the pack as `sd35_fp8`)
    from sd35_fp8.quant.__main__ import main
    sys.exit(main(prog=os.path.basename(sys.argv[0])))
