"""Counts the LoRA side-path factor searches (quant.kernels.low_rank.low_rank_factors), which are
meant to run once per patched layer and LoRA state, never per call or per run of the same state."""
from contextlib import contextmanager


@contextmanager
def counted_factor_searches():
    """Yields [number of searches made while inside]."""
    from sd35_fp8.quant.kernels import low_rank
    search, count = low_rank.low_rank_factors, [0]

    def counted(*args, **kwargs):
        count[0] += 1
        return search(*args, **kwargs)
    low_rank.low_rank_factors = counted
    try:
        yield count
    finally:
        low_rank.low_rank_factors = search
