"""Upstream's ``device`` arguments mapped to MLX devices.

Upstream's constructors take a torch device ("cpu", "cuda", "mps"); MLX has a CPU and a
GPU (Metal on Macs, CUDA on Linux builds). A GPU name where MLX has no GPU falls back to
the CPU with a warning, as upstream does for "mps" on a machine without it.
"""

from __future__ import annotations

import warnings

import mlx.core as mx

GPU_NAMES = ("gpu", "mps", "cuda", "metal")


def resolve_device(device) -> mx.Device | None:
    """``None`` (keep MLX's default), ``"cpu"``, ``"gpu"``/``"mps"``/``"cuda"`` (also
    ``"cuda:0"``, a ``torch.device`` or an ``mx.Device``) -> an MLX device."""
    if device is None or isinstance(device, (mx.Device, mx.DeviceType)):
        return device
    name = str(device).strip().lower().split(":")[0]
    if name == "cpu":
        return mx.cpu
    if name in GPU_NAMES:
        if mx.is_available(mx.gpu):
            return mx.gpu
        message = f"device {device!r}: this MLX has no GPU backend; using the CPU"
        warnings.warn(message, stacklevel=3)
        return mx.cpu
    raise ValueError(
        f"unknown device {device!r}: use 'cpu', or 'gpu' (also 'mps', 'cuda') for MLX's GPU. "
        "To load a checkpoint from a path or hub repo, pass name= (from_pretrained) or "
        "use from_local(path)"
    )


def use_device(device) -> mx.Device:
    """Make ``device`` MLX's default (MLX has one default device per process)."""
    resolved = resolve_device(device)
    if resolved is not None and mx.default_device() != resolved:
        mx.set_default_device(resolved)
    return mx.default_device()
