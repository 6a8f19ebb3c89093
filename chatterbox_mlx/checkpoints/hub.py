"""Find a model by name and load it.

A name can be:
- a converted MLX directory (``config.json`` with ``"format": "chatterbox-mlx"``);
- a hub repo holding such a conversion (downloaded, then as above);
- an original Resemble AI repo or directory (``ResembleAI/chatterbox``, a local
  snapshot): converted on first use into the cache (``$CHATTERBOX_MLX_CACHE``, default
  ``~/.cache/chatterbox-mlx``), so later loads, offline ones included, are fast.

Imports run one way: ``hub`` uses ``convert`` (conversion on first use), which uses
``checkpoint`` (the format) and ``originals`` (the original files and their download).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from ..variants import Variant, default_variant_for_repo, detect_variant, get_variant
from .convert import ConversionError, convert
from .layout import (
    CONFIG_FILE,
    Components,
    is_converted,
    load_checkpoint,
    read_config,
)
from .originals import (
    MissingFilesError,
    cache_root,
    check_source,
    download_failed,
    download_original,
    looks_like_repo_id,
    offline,
    snapshot,
    source_files,
)

__all__ = ["Components", "MissingFilesError", "load_components", "resolve"]


def is_original_dir(path: Path) -> bool:
    try:
        detect_variant(path)
    except ValueError:
        return False
    return True


def repo_kind(repo: str, revision: str | None) -> str:
    """ "mlx" for a repo holding a conversion, else "original"."""
    if default_variant_for_repo(repo) is not None:
        return "original"
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    try:
        path = hf_hub_download(repo, CONFIG_FILE, revision=revision, local_files_only=offline())
    except EntryNotFoundError:
        return "original"
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as err:
        raise download_failed(repo, [CONFIG_FILE], err) from err
    return "mlx" if is_converted(Path(path).parent) else "original"


def converted_cache_dir(key: str, variant: Variant) -> Path:
    safe = key.strip("/").replace("/", "--")
    return cache_root() / "converted" / f"{safe}--{variant.name}"


def _local_key(directory: Path, variant: Variant) -> str:
    """Cache key of a local original directory: its path and its files' sizes/mtimes."""
    parts = [str(directory.resolve())]
    for path in source_files(directory, variant).values():
        stat = path.stat()
        parts.append(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}")
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    return f"local-{directory.name}-{digest}"


def convert_into_cache(source: Path, target: Path, variant: Variant, repo, revision) -> Path:
    if is_converted(target):
        return target
    if target.exists():  # a stale, damaged or foreign folder: replace it
        shutil.rmtree(target)
    try:
        convert(source, target, variant=variant, repo=repo, revision=revision)
    except ConversionError:
        if is_converted(target):  # another process finished the same conversion first
            return target
        raise
    return target


def resolve(name: str | Path, variant: str | None = None, revision: str | None = None) -> Path:
    """A converted MLX directory for ``name`` (converting and caching if needed)."""
    chosen = get_variant(variant) if variant else None
    path = Path(name).expanduser()
    if path.is_dir():
        if is_converted(path):
            return path
        if not is_original_dir(path):
            if (path / CONFIG_FILE).exists():
                read_config(path)  # says what is wrong with it (unreadable, truncated, foreign)
            raise MissingFilesError(
                f"{path} is neither a converted chatterbox-mlx directory (no config.json) nor "
                "an original Chatterbox checkpoint (no t3_*.safetensors)"
            )
        var = chosen or detect_variant(path)
        check_source(path, var)
        target = converted_cache_dir(_local_key(path, var), var)
        return convert_into_cache(path, target, var, None, None)
    name = str(name)
    if not looks_like_repo_id(name):
        raise MissingFilesError(f"{name}: no such directory, and not a hub repo id (owner/name)")
    if chosen is None:
        chosen = default_variant_for_repo(name)
    if chosen is not None and default_variant_for_repo(name) is not None:
        target = converted_cache_dir(f"{name}@{revision or 'main'}", chosen)
        if is_converted(target):
            return target  # converted before: no network needed
    if repo_kind(name, revision) == "mlx":
        return snapshot(name, None, revision)
    directory, commit = download_original(name, chosen, revision)
    var = chosen or detect_variant(directory, name)
    target = converted_cache_dir(f"{name}@{revision or 'main'}", var)
    return convert_into_cache(directory, target, var, name, commit)


def load_components(
    path_or_repo: str | Path,
    variant: str | None = None,
    networks: tuple[str, ...] | None = None,
    revision: str | None = None,
) -> Components:
    """Resolve ``path_or_repo`` (see the module doc) and load it: every network (or those
    named in ``networks``) with its weights checked, and the built-in voice."""
    return load_checkpoint(resolve(path_or_repo, variant, revision), variant, networks)
