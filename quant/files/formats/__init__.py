"""SD3.5 model files as users have them, read into one internal form, and the file this pack writes.

Reading: stored_layers.py finds how a file keeps its FP8 layers (ComfyUI's comfy_quant, the
0.3.7x `_quantization_metadata` header, legacy `scaled_fp8`, optimum-quanto, plain fp8),
diffusers_sd3.py maps diffusers names onto ComfyUI's, model_files.py opens single files and
sharded diffusers folders, mmdit_reader.py streams the result. Writing: comfy_mixed.py.
"""
