"""What the checkpoint loader outputs for a CLIP or VAE its file does not have.

ComfyUI caches a node's outputs by its inputs alone, so the loader cannot know which outputs a
prompt uses. Stock loaders output None for a missing part, which fails downstream with "'NoneType'
object has no attribute 'decode'"; this object fails where it is used, with the file's name and
what to connect instead."""
from ..quant.errors import SD35FP8Error


class MissingPartError(SD35FP8Error, AttributeError):
    """Also an AttributeError, so that ComfyUI's probes of cached outputs (0.33's RAM-pressure
    cache: hasattr(output, "is_dynamic"), getattr(output, "patcher", None)) find no attribute
    instead of failing."""


class MissingPart:
    def __init__(self, message):
        self.message = message

    def __getattr__(self, name):
        if name.startswith("__"):  # copy, pickle and friends look for optional dunder methods
            raise AttributeError(name)
        raise MissingPartError(self.message)
