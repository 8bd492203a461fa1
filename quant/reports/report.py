"""Per-layer quantization results and the totals the nodes print."""
from dataclasses import dataclass

GIB = 1024 ** 3


@dataclass(frozen=True)
class LayerReport:
    name: str
    quantized: bool
    reason: str
    shape: tuple
    bytes_before: int  # in the compute dtype, as an unquantized model holds it
    bytes_after: int  # as this pack stores it (fp8 weight + fp32 scales, or compute dtype)
    weight_rel_error: float  # ||dequantized - original|| / ||original||; 0.0 when kept, None when
    # the file already held the layer in FP8 (taken as stored: the original is not known)


@dataclass(frozen=True)
class QuantReport:
    policy: str
    granularity: str
    layers: tuple
    other_bytes: int  # biases, norms, convolutions, pos_embed: the same before and after

    @property
    def bytes_before(self):
        return self.other_bytes + sum(layer.bytes_before for layer in self.layers)

    @property
    def bytes_after(self):
        return self.other_bytes + sum(layer.bytes_after for layer in self.layers)

    @property
    def quantized_layers(self):
        return tuple(layer for layer in self.layers if layer.quantized)

    @property
    def kept_layers(self):
        return tuple(layer for layer in self.layers if not layer.quantized)

    @property
    def stored_layers(self):
        return tuple(layer for layer in self.quantized_layers if layer.weight_rel_error is None)

    @property
    def max_weight_rel_error(self):
        return max((layer.weight_rel_error for layer in self.quantized_layers if layer.weight_rel_error is not None),
                   default=0.0)

    def summary(self, model_name: str) -> str:
        stored = len(self.stored_layers)
        notes = [f"{stored} taken as stored in the file (no re-quantization)"] if stored else []
        if stored < len(self.quantized_layers) or not stored:
            notes.insert(0, f"worst weight error {self.max_weight_rel_error:.2%}")
        return (f"{model_name}, policy {self.policy} ({self.granularity} scales): "
                f"{len(self.quantized_layers)} linears in FP8, {len(self.kept_layers)} kept high precision; "
                f"{self.bytes_before / GIB:.2f} GiB -> {self.bytes_after / GIB:.2f} GiB; {', '.join(notes)}")
