import torch

from sd35_fp8.quant.kernels.low_rank import lora_beside
from sd35_fp8.quant.kernels.tensor_arena import TensorArena
from sd35_fp8.quant.scales import dequantize_weight, quantize_weight


def _chunk_of(tensor):
    return tensor.untyped_storage().data_ptr()


def test_placed_tensors_are_equal_copies_packed_and_aligned_in_one_chunk():
    arena = TensorArena(chunk_bytes=4096)
    tensors = [torch.randn(5, 3), torch.randn(7, dtype=torch.bfloat16), torch.randn(2, 9).to(torch.float8_e4m3fn),
               torch.randn(3, 4).t(), torch.empty(6, 0)]
    placed = [arena.place(t) for t in tensors]
    for original, copy in zip(tensors, placed):
        assert copy.dtype == original.dtype and copy.shape == original.shape and copy.is_contiguous()
        assert torch.equal(copy.view(torch.uint8), original.contiguous().view(torch.uint8))
        assert copy.numel() == 0 or (copy.data_ptr() - _chunk_of(copy)) % 256 == 0  # an empty tensor's is 0
    assert len({_chunk_of(t) for t in placed}) == 1
    tensors[0].zero_()
    assert placed[0].abs().sum() > 0  # copies, not views of the originals


def test_a_full_chunk_is_left_to_its_tensors_and_a_new_one_begun():
    arena = TensorArena(chunk_bytes=1024)
    first, second, third = (arena.place(torch.randn(100)) for _ in range(3))  # 400 bytes each, 512 apart
    assert _chunk_of(first) == _chunk_of(second) != _chunk_of(third)
    own = arena.place(torch.randn(300))  # 1200 bytes: larger than a chunk
    assert own.untyped_storage().nbytes() == 1200 and _chunk_of(own) not in {_chunk_of(first), _chunk_of(third)}
    assert _chunk_of(arena.place(torch.randn(10))) == _chunk_of(third)


def test_tensors_placed_in_inference_mode_leave_the_arena_usable_outside_it():
    """Side paths are found during sampling, in inference mode, and can be found again outside it (LoRA
    training on the same model), where an inference tensor cannot be written."""
    arena = TensorArena()
    with torch.inference_mode():
        during_sampling = arena.place(torch.randn(10))
    after = arena.place(torch.randn(10))
    assert during_sampling.is_inference() and not after.is_inference()
    assert _chunk_of(after) != _chunk_of(during_sampling)
    with torch.inference_mode():
        assert _chunk_of(arena.place(torch.randn(10))) == _chunk_of(after)


def test_a_placed_side_path_computes_what_the_side_path_computes():
    weight_fp8, scale = quantize_weight(torch.randn(96, 256) * 256 ** -0.5)
    real = dequantize_weight(weight_fp8, scale)
    patched = real + torch.randn(96, 4) @ torch.randn(4, 256) * 0.002
    side = lora_beside(weight_fp8, scale, patched, with_columns=True)
    placed = side.placed(TensorArena())
    assert side.columns is not None and placed.columns is not None
    for original, copy in zip((side.up, side.down, *side.columns), (placed.up, placed.down, *placed.columns)):
        assert torch.equal(copy.view(torch.uint8), original.contiguous().view(torch.uint8))
    assert len({_chunk_of(t) for t in (placed.up, placed.down, *placed.columns)}) == 1
    x = torch.randn(8, 256)
    assert torch.equal(placed.add_to(torch.zeros(8, 96), x), side.add_to(torch.zeros(8, 96), x))
    without_columns = lora_beside(weight_fp8, scale, patched).placed(TensorArena())
    assert without_columns.columns is None
