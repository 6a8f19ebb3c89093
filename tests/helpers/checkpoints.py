"""Random-weight checkpoints with exactly the real hub files' names and key layout.

numpy + safetensors only, so the same code runs here (no torch) and inside the
reference venv, where the golden scripts load the very same files into the
PyTorch reference. Values are a pure function of (seed, key): overriding or
adding one tensor never changes another.

Layouts (``layouts/*.json``) are the reference state_dicts at full size (key -> [shape,
dtype]), as chatterbox-tts 0.1.7 builds them; ``benchmarks/reference/CHECKPOINTS.md``
describes the real files.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

LAYOUT_DIR = Path(__file__).parent / "layouts"

# Hub file name of each layout.
FILES = {
    "ve": "ve.safetensors",
    "t3_cfg": "t3_cfg.safetensors",
    "t3_mtl": "t3_mtl23ls_v2.safetensors",
    "t3_turbo": "t3_turbo_v1.safetensors",
    "t3_nano": "t3_nano_v1.safetensors",
    "s3gen": "s3gen.safetensors",
    "s3gen_meanflow": "s3gen_meanflow.safetensors",
}


def layout(name: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """key -> (shape, dtype) of one real checkpoint file."""
    data = json.loads((LAYOUT_DIR / f"{name}.json").read_text())
    return {k: (tuple(shape), dtype) for k, (shape, dtype) in data["tensors"].items()}


def tensor_rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


def random_tensor(key: str, shape: tuple[int, ...], dtype: str, seed: int) -> np.ndarray:
    """A plausible random value for one checkpoint tensor (fan-in scaled)."""
    if dtype == "int64":
        return np.zeros(shape, dtype=np.int64)  # num_batches_tracked
    rng = tensor_rng(seed, key)
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "running_var":
        x = rng.uniform(0.5, 1.5, size=shape)
    elif leaf == "running_mean" or leaf == "bias" or "bias" in leaf:
        x = 0.1 * rng.standard_normal(shape)
    elif leaf == "original0" or leaf == "weight_g":  # weight-norm magnitude g
        x = rng.uniform(0.5, 1.5, size=shape)
    elif len(shape) >= 2:
        fan_in = int(np.prod(shape[1:]))
        x = rng.standard_normal(shape) / np.sqrt(fan_in)
    else:  # norm scales, Snake alphas, scalar parameters
        x = 1.0 + 0.1 * rng.standard_normal(shape)
    return x.astype(np.float32)


def random_weights(
    name: str,
    seed: int = 0,
    overrides: Mapping[str, np.ndarray] | None = None,
    transform: Callable[[str, np.ndarray], np.ndarray] | None = None,
    drop: tuple[str, ...] = (),
) -> dict[str, np.ndarray]:
    """All tensors of layout ``name``. ``overrides`` replaces values by key,
    ``transform(key, value)`` edits them (e.g. scale one layer), ``drop`` removes keys."""
    overrides = dict(overrides or {})
    weights = {}
    for key, (shape, dtype) in layout(name).items():
        if key in drop:
            continue
        value = overrides.pop(key) if key in overrides else random_tensor(key, shape, dtype, seed)
        if tuple(value.shape) != shape:
            raise ValueError(f"override {key}: shape {value.shape}, layout says {shape}")
        if transform is not None:
            value = transform(key, value)
        weights[key] = np.ascontiguousarray(value)
    if overrides:
        raise KeyError(f"overrides for keys not in layout {name}: {sorted(overrides)}")
    return weights


def write_checkpoint(name: str, directory: str | Path, seed: int = 0, **kwargs) -> Path:
    """Write layout ``name`` under its hub file name into ``directory``; return the path."""
    from safetensors.numpy import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / FILES[name]
    tmp = path.with_suffix(".tmp")
    save_file(random_weights(name, seed, **kwargs), str(tmp))
    os.replace(tmp, path)
    return path


def cache_dir() -> Path:
    """Where tests keep full-size random checkpoints between runs."""
    root = os.environ.get("CHATTERBOX_MLX_TEST_CACHE")
    path = Path(root) if root else Path.home() / ".cache" / "chatterbox-mlx-tests"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cached_checkpoint(name: str, seed: int = 0, tag: str = "", **kwargs) -> Path:
    """``write_checkpoint`` into the test cache, skipped when the file already exists.

    ``tag`` must change whenever ``kwargs`` change (it names the cache folder)."""
    directory = cache_dir() / f"seed{seed}{'-' + tag if tag else ''}"
    path = directory / FILES[name]
    if not path.exists():
        write_checkpoint(name, directory, seed, **kwargs)
    return path
