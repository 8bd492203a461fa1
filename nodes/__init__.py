from . import loaders, save, text_encoders

NODE_CLASS_MAPPINGS = {**loaders.NODE_CLASS_MAPPINGS, **text_encoders.NODE_CLASS_MAPPINGS, **save.NODE_CLASS_MAPPINGS}
NODE_DISPLAY_NAME_MAPPINGS = {**loaders.NODE_DISPLAY_NAME_MAPPINGS, **text_encoders.NODE_DISPLAY_NAME_MAPPINGS,
                              **save.NODE_DISPLAY_NAME_MAPPINGS}
