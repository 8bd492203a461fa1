import pytest

from sd35_fp8.quant.kernels.compute_path import FP8_ROWWISE, FP8_TENSORWISE, WEIGHT_ONLY, choose_compute_path


@pytest.mark.parametrize("device,capability,torch_version,expected", [
    ("cpu", None, (2, 11), WEIGHT_ONLY),
    ("mps", None, (2, 11), WEIGHT_ONLY),
    ("cuda", (7, 5), (2, 11), WEIGHT_ONLY),   # Turing
    ("cuda", (8, 0), (2, 11), WEIGHT_ONLY),   # A100
    ("cuda", (8, 6), (2, 11), WEIGHT_ONLY),   # RTX 30
    ("cuda", (8, 9), (2, 11), FP8_ROWWISE),   # RTX 40 / L40
    ("cuda", (8, 9), (2, 6), FP8_TENSORWISE),  # Ada: row-wise scaled_mm only from torch 2.7
    ("cuda", (9, 0), (2, 5), FP8_ROWWISE),    # H100
    ("cuda", (9, 0), (2, 4), FP8_TENSORWISE),
    ("cuda", (12, 0), (2, 11), FP8_ROWWISE),  # Blackwell consumer
])
def test_path_for_each_gpu_and_torch(device, capability, torch_version, expected):
    path = choose_compute_path(device, capability, torch_version)
    assert path.name == expected and path.reason


def test_weight_only_can_be_forced_and_says_so():
    path = choose_compute_path("cuda", (9, 0), (2, 11), force_weight_only=True)
    assert path.name == WEIGHT_ONLY and "forced" in path.reason


def test_older_gpu_reason_names_the_capability():
    assert "8.6" in choose_compute_path("cuda", (8, 6), (2, 11)).reason


@pytest.mark.parametrize("device,capability,triton_available,expected", [
    ("cuda", (9, 0), True, True), ("cuda", (8, 0), True, True), ("cuda", (7, 5), True, False),
    ("cuda", (9, 0), False, False), ("cpu", None, True, False), ("mps", None, True, False)])
def test_triton_kernels_only_on_cuda_8_0_or_newer_with_triton(device, capability, triton_available, expected):
    path = choose_compute_path(device, capability, (2, 11), triton_available=triton_available)
    assert path.triton_kernels is expected
    assert ("FP8-weight kernel" in path.summary) is expected and path.name in path.summary
    assert ("q and k RMS norms in one pass" in path.summary) is expected
    assert ("MLP GELU and fc2's activation quantization in one kernel" in path.summary) is (
        expected and path.name == FP8_ROWWISE)


def test_forced_weight_only_keeps_the_triton_kernels():
    assert choose_compute_path("cuda", (9, 0), (2, 11), force_weight_only=True).triton_kernels
