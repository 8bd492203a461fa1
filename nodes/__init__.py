from . import compare, compile_cuda_graphs, loaders, report, save, text_encoders

NODE_CLASS_MAPPINGS = {**loaders.NODE_CLASS_MAPPINGS, **text_encoders.NODE_CLASS_MAPPINGS, **save.NODE_CLASS_MAPPINGS,
                       **report.NODE_CLASS_MAPPINGS, **compare.NODE_CLASS_MAPPINGS,
                       **compile_cuda_graphs.NODE_CLASS_MAPPINGS}
NODE_DISPLAY_NAME_MAPPINGS = {**loaders.NODE_DISPLAY_NAME_MAPPINGS, **text_encoders.NODE_DISPLAY_NAME_MAPPINGS,
                              **save.NODE_DISPLAY_NAME_MAPPINGS, **report.NODE_DISPLAY_NAME_MAPPINGS,
                              **compare.NODE_DISPLAY_NAME_MAPPINGS, **compile_cuda_graphs.NODE_DISPLAY_NAME_MAPPINGS}
