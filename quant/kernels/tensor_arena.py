"""Long-lived small tensors packed side by side into a few large allocations.

A LoRA's side paths (low_rank.py) are a few small tensors per layer, made one layer at a time in the
middle of a sampling step, among the step's activations and the factor search's transients. Each
allocated alone, they land in whatever free gaps the allocator holds and keep those blocks (or, with
cudaMallocAsync, the pool's pages) from being returned when the rest is freed. Packed into chunks they pin
only the chunks: with a LoRA under DynamicVRAM's 8 GiB cap, 0.5-1.2 GiB less of cudaMallocAsync's pool stayed
reserved (bench/analysis_lora.md, thirty-ninth session).
"""
import torch

# The side paths of a rank-16 LoRA on SD3.5 Large's qkv and fc1 take about 200 MiB in all
_CHUNK_BYTES = 32 * 2 ** 20
# the alignment of torch's own allocations, which its kernels and cuBLAS expect
_ALIGNMENT = 256


class TensorArena:
    """Copies of tensors, placed one after another in chunks of chunk_bytes on their device. A chunk
    is freed when no copy in it is left; the arena holds only the one it is filling."""

    def __init__(self, chunk_bytes: int = _CHUNK_BYTES):
        self.chunk_bytes = chunk_bytes
        self._chunk = None
        self._filled = 0

    def place(self, tensor: torch.Tensor) -> torch.Tensor:
        """A contiguous copy of tensor; one larger than a chunk gets an allocation of its own."""
        size = tensor.numel() * tensor.element_size()
        if size > self.chunk_bytes:
            return tensor.clone(memory_format=torch.contiguous_format)
        offset = -(-self._filled // _ALIGNMENT) * _ALIGNMENT
        # a chunk made during sampling (inference mode) cannot be written outside it (LoRA training)
        stale = self._chunk is not None and self._chunk.is_inference() and not torch.is_inference_mode_enabled()
        if (self._chunk is None or stale or self._chunk.device != tensor.device
                or offset + size > self.chunk_bytes):
            self._chunk = torch.empty(self.chunk_bytes, dtype=torch.uint8, device=tensor.device)
            offset = 0
        self._filled = offset + size
        copy = self._chunk[offset:offset + size].view(tensor.dtype).view(tensor.shape)
        return copy.copy_(tensor)
