"""The torch device of this rank: the GPU of its local rank (LUMI gives every task all 8 GCDs).

The rule (which GPU index) is dfm_hpc.dist.gpu_index, pure and shared; this is the rank-side part.
"""

from __future__ import annotations

from dfm_hpc.dist import gpu_index


def torch_device() -> str:
    """'cuda:<gpu_index>' (ROCm too), made the current device; 'cpu' without a GPU."""
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    i = gpu_index(visible=torch.cuda.device_count())
    torch.cuda.set_device(i)
    return f"cuda:{i}"
