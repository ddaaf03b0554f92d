import pytest
import torch

from attnseg.device import resolve_device
from attnseg.errors import ConfigError


def test_device_per_local_rank():
    assert resolve_device("cpu", local_rank=3) == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto", local_rank=1) == torch.device("cpu")
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            resolve_device("cuda")
    else:
        count = torch.cuda.device_count()
        assert resolve_device("cuda", local_rank=count - 1) == torch.device("cuda", count - 1)
        with pytest.raises(ConfigError, match=f"torchrun --nproc_per_node={count}"):
            resolve_device("auto", local_rank=count)
