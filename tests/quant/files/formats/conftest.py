import pytest
import torch

from devtools.tiny_sd3 import mmdit_state_dict


@pytest.fixture
def source():
    """A fresh tiny SD3.5 Medium MMDiT (bf16, ComfyUI names)."""
    return mmdit_state_dict("medium", depth=2, prefix="", seed=int(torch.randint(0, 10**6, ())))
