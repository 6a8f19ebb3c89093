"""Find a model's files and load its networks.

A name can be:
- a converted MLX directory (has ``config.json`` with ``"format": "chatterbox-mlx"``);
- a hub repo holding such a conversion (downloaded, then as above);
- an original Resemble AI repo or directory (``ResembleAI/chatterbox``, a local
  snapshot): converted on first use into the cache (``$CHATTERBOX_MLX_CACHE``, default
  ``~/.cache/chatterbox-mlx``), so later loads, offline ones included, are fast.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx

from . import convert as conv
from .variants import Variant, default_variant_for_repo, detect_variant, get_variant
from .weights import CheckpointError, load_safetensors, load_strict


class MissingFilesError(FileNotFoundError):
    """The model's files are neither local nor cached, and cannot be downloaded."""


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def is_mlx_dir(path: Path) -> bool:
    config = path / conv.CONFIG_FILE
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("format") == conv.FORMAT_NAME
    except (json.JSONDecodeError, AttributeError):
        return False


def is_original_dir(path: Path) -> bool:
    try:
        detect_variant(path)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------- hub access


def missing_files_error(repo: str, files: list[str], reason: str) -> MissingFilesError:
    listing = " ".join(files)
    return MissingFilesError(
        f"cannot get {repo}: {reason}. Files needed: {listing}.\n"
        f"Download them while online (unset HF_HUB_OFFLINE): "
        f"huggingface-cli download {repo} {listing}\n"
        "or pass a local directory that holds them (original or converted)."
    )


def not_cached(repo: str, files: list[str], revision: str | None) -> list[str]:
    from huggingface_hub import try_to_load_from_cache

    return [
        f for f in files if not isinstance(try_to_load_from_cache(repo, f, revision=revision), str)
    ]


def snapshot(repo: str, patterns: list[str] | None, revision: str | None) -> Path:
    """``snapshot_download`` with errors that name the missing files."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(
            snapshot_download(
                repo, allow_patterns=patterns, revision=revision, local_files_only=offline()
            )
        )
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as err:
        files = patterns or ["(the whole repository)"]
        missing = not_cached(repo, patterns, revision) if patterns else files
        reason = "offline (HF_HUB_OFFLINE is set)" if offline() else f"download failed ({err})"
        raise missing_files_error(repo, missing or files, reason) from err


ORIGINAL_PATTERNS = ["*.safetensors", "*.json", "*.txt", "*.pt"]


def download_original(
    repo: str, variant: Variant | None, revision: str | None = None
) -> tuple[Path, str | None]:
    """The local snapshot of an original repo (only ``variant``'s files) and its commit."""
    patterns = variant.download_patterns if variant else ORIGINAL_PATTERNS
    directory = snapshot(repo, patterns, revision)
    if variant is not None:
        absent = [n for n in variant.required_files if not (directory / n).is_file()]
        fallbacks = [variant.fallback_files[n] for n in absent if n in variant.fallback_files]
        if fallbacks:  # e.g. only ve.pt / s3gen.pt published
            directory = snapshot(repo, patterns + fallbacks, revision)
        conv.check_source(directory, variant)
    commit = directory.name if directory.parent.name == "snapshots" else revision
    return directory, commit


def repo_kind(repo: str, revision: str | None) -> str:
    """ "mlx" for a repo holding a conversion, else "original"."""
    if default_variant_for_repo(repo) is not None:
        return "original"
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    try:
        path = hf_hub_download(
            repo, conv.CONFIG_FILE, revision=revision, local_files_only=offline()
        )
    except EntryNotFoundError:
        return "original"
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as err:
        reason = "offline (HF_HUB_OFFLINE is set)" if offline() else f"download failed ({err})"
        raise missing_files_error(repo, [conv.CONFIG_FILE], reason) from err
    return "mlx" if is_mlx_dir(Path(path).parent) else "original"


# ---------------------------------------------------------------------------- resolve


def converted_cache_dir(key: str, variant: Variant) -> Path:
    safe = key.strip("/").replace("/", "--")
    return conv.cache_root() / "converted" / f"{safe}--{variant.name}"


def _local_key(directory: Path, variant: Variant) -> str:
    """Cache key of a local original directory: its path and its files' sizes/mtimes."""
    parts = [str(directory.resolve())]
    for path in conv.source_weights(directory, variant).values():
        stat = path.stat()
        parts.append(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}")
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    return f"local-{directory.name}-{digest}"


def convert_into_cache(source: Path, target: Path, variant: Variant, repo, revision) -> Path:
    if is_mlx_dir(target):
        return target
    if target.exists():  # a stale or foreign folder: replace it
        shutil.rmtree(target)
    try:
        conv.convert(source, target, variant=variant, repo=repo, revision=revision)
    except conv.ConversionError:
        if is_mlx_dir(target):  # another process finished the same conversion first
            return target
        raise
    return target


def resolve(name: str | Path, variant: str | None = None, revision: str | None = None) -> Path:
    """A converted MLX directory for ``name`` (converting and caching if needed)."""
    chosen = get_variant(variant) if variant else None
    path = Path(name).expanduser()
    if path.is_dir():
        if is_mlx_dir(path):
            return path
        if not is_original_dir(path):
            raise MissingFilesError(
                f"{path} is neither a converted chatterbox-mlx directory (no config.json) nor "
                "an original Chatterbox checkpoint (no t3_*.safetensors)"
            )
        var = chosen or detect_variant(path)
        conv.check_source(path, var)
        target = converted_cache_dir(_local_key(path, var), var)
        return convert_into_cache(path, target, var, None, None)
    name = str(name)
    if not conv.looks_like_repo_id(name):
        raise MissingFilesError(f"{name}: no such directory, and not a hub repo id (owner/name)")
    if chosen is None:
        chosen = default_variant_for_repo(name)
    if chosen is not None and default_variant_for_repo(name) is not None:
        target = converted_cache_dir(f"{name}@{revision or 'main'}", chosen)
        if is_mlx_dir(target):
            return target  # converted before: no network needed
    if repo_kind(name, revision) == "mlx":
        return snapshot(name, None, revision)
    directory, commit = download_original(name, chosen, revision)
    var = chosen or detect_variant(directory, name)
    target = converted_cache_dir(f"{name}@{revision or 'main'}", var)
    return convert_into_cache(directory, target, var, name, commit)


# ---------------------------------------------------------------------------- load


@dataclass
class Components:
    """A converted model: its config, the loaded networks and the built-in voice."""

    path: Path
    config: dict
    variant: Variant
    t3: object = None
    flow: object = None
    hift: object = None
    s3tokenizer: object = None
    campplus: object = None
    voice_encoder: object = None
    conds: object = None  # chatterbox_mlx.conditionals.Conditionals (the built-in voice)
    tokenizer_files: list[Path] = field(default_factory=list)

    @property
    def generation(self) -> dict:
        return dict(self.config.get("generation", {}))


def read_config(path: Path) -> dict:
    config_path = path / conv.CONFIG_FILE
    try:
        config = json.loads(config_path.read_text())
    except FileNotFoundError:
        raise MissingFilesError(f"{config_path} is missing: convert the model first") from None
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{config_path} is not valid JSON ({err})") from err
    version = config.get("format_version")
    if config.get("format") != conv.FORMAT_NAME or version is None:
        raise CheckpointError(f"{config_path} is not a chatterbox-mlx config")
    if version > conv.FORMAT_VERSION:
        raise CheckpointError(
            f"{config_path} has format version {version}; this chatterbox-mlx reads up to "
            f"{conv.FORMAT_VERSION}. Upgrade chatterbox-mlx."
        )
    return config


def load_network(path: Path, config: dict, net: conv.Network):
    entry = config["networks"].get(net.name)
    if entry is None:
        raise CheckpointError(f"{path / conv.CONFIG_FILE}: no entry for the {net.label} network")
    net_config = conv.config_from_dict(net, entry["config"])
    quantization = config.get("quantization")
    if quantization and net.name not in quantization.get("networks", ["t3"]):
        quantization = None
    model = conv.build_model(net, net_config, quantization)
    weights = load_safetensors(path / entry["file"])  # lazy: no copy until used
    load_strict(model, weights, f"{net.label} ({path / entry['file']})")
    model.eval()
    return model


def load_conds(path: Path):
    from .conditionals import Conditionals

    return Conditionals.load(path)


def load_components(
    path_or_repo: str | Path,
    variant: str | None = None,
    networks: tuple[str, ...] | None = None,
    revision: str | None = None,
) -> Components:
    """Resolve ``path_or_repo`` (see module doc) and load its networks lazily.

    ``networks`` limits which are loaded (default: all six)."""
    path = resolve(path_or_repo, variant, revision)
    config = read_config(path)
    if variant is not None and get_variant(variant).name != config["variant"]:
        raise CheckpointError(
            f"{path} holds the {config['variant']} variant, not {get_variant(variant).name}"
        )
    wanted = networks or tuple(n.name for n in conv.NETWORKS)
    unknown = sorted(set(wanted) - {n.name for n in conv.NETWORKS})
    if unknown:
        raise ValueError(f"unknown networks {unknown}; known: {[n.name for n in conv.NETWORKS]}")
    parts = {n.name: load_network(path, config, n) for n in conv.NETWORKS if n.name in wanted}
    conds_path = path / config.get("conds_file", conv.CONDS_FILE)
    conds = load_conds(conds_path) if conds_path.is_file() else None
    return Components(
        path=path,
        config=config,
        variant=get_variant(config["variant"]),
        conds=conds,
        tokenizer_files=[path / f for f in config.get("tokenizer_files", [])],
        **parts,
    )


def evaluate(components: Components) -> None:
    """Force every loaded parameter into memory (otherwise they load on first use)."""
    for net in conv.NETWORKS:
        model = getattr(components, net.name)
        if model is not None:
            mx.eval(model.parameters())
