"""The error measure every test and benchmark uses: ||approx - reference|| / ||reference|| in fp64;
and the distance of two fp8 tensors in representable steps, for kernels that must round as their
reference does."""
import torch


def relative_error(approx, reference):
    return ((approx.double() - reference.double()).norm() / reference.double().norm()).item()


def fp8_steps_apart(a, b):
    """How many representable e4m3fn values lie between each pair of elements of two fp8 tensors
    (0 and -0 count as one value)."""
    def ordered(t):
        bits = t.view(torch.uint8).int()
        magnitude = bits & 0x7F
        return torch.where(bits >= 0x80, -magnitude, magnitude)
    return (ordered(a) - ordered(b)).abs()
