"""The original Resemble AI checkpoints, the converter's input: which files a variant
needs, getting them (a local folder, or the Hugging Face hub, honouring
``HF_HUB_OFFLINE``), and their sha256 (remembered, for the conversion's provenance).

Imported by ``convert`` and ``hub``; imports neither.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..files import atomic_write, sha256_file
from ..variants import Variant

# Every file an original repo may hold that a variant can use (when the variant is unknown).
ORIGINAL_PATTERNS = ["*.safetensors", "*.json", "*.txt", "*.pt"]


class MissingFilesError(FileNotFoundError):
    """The model's files are neither local nor cached, and cannot be downloaded."""


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def looks_like_repo_id(name: str) -> bool:
    return name.count("/") == 1 and not name.startswith((".", "/", "~"))


# ---------------------------------------------------------------------------- local files


def download_hint(variant: Variant, files: list[str]) -> str:
    return f"huggingface-cli download {variant.repo_id} {' '.join(files)} --local-dir DIR"


def source_path(directory: Path, variant: Variant, name: str) -> Path:
    """A required file, or its torch-pickle fallback (Multilingual's ve.pt/s3gen.pt)."""
    path = directory / name
    fallback = variant.fallback_files.get(name)
    if not path.is_file() and fallback and (directory / fallback).is_file():
        return directory / fallback
    return path


def source_files(directory: Path, variant: Variant) -> dict[str, Path]:
    """The weight file of each source ("t3", "s3gen", "ve") in ``directory``."""
    return {
        "t3": source_path(directory, variant, variant.t3_file),
        "s3gen": source_path(directory, variant, variant.s3gen_file),
        "ve": source_path(directory, variant, variant.ve_file),
    }


def check_source(directory: Path, variant: Variant) -> None:
    """Every file ``variant`` needs is in ``directory``, or MissingFilesError naming them."""
    wanted = variant.required_files
    missing = [n for n in wanted if not source_path(directory, variant, n).is_file()]
    if missing:
        raise MissingFilesError(
            f"{directory} lacks {len(missing)} file(s) of the {variant.name} checkpoint: "
            f"{', '.join(missing)}.\nGet them with: {download_hint(variant, missing)}"
        )


# ---------------------------------------------------------------------------- the hub


def missing_files_error(repo: str, files: list[str], reason: str) -> MissingFilesError:
    listing = " ".join(files)
    return MissingFilesError(
        f"cannot get {repo}: {reason}. Files needed: {listing}.\n"
        f"Download them while online (unset HF_HUB_OFFLINE): "
        f"huggingface-cli download {repo} {listing}\n"
        "or pass a local directory that holds them (original or converted)."
    )


def download_failed(repo: str, files: list[str], err: Exception) -> MissingFilesError:
    reason = "offline (HF_HUB_OFFLINE is set)" if offline() else f"download failed ({err})"
    return missing_files_error(repo, files, reason)


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
        raise download_failed(repo, missing or files, err) from err


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
        check_source(directory, variant)
    commit = directory.name if directory.parent.name == "snapshots" else revision
    return directory, commit


# ---------------------------------------------------------------------------- hashes


def cache_root() -> Path:
    """Where converted models and file hashes are kept (``$CHATTERBOX_MLX_CACHE``)."""
    root = os.environ.get("CHATTERBOX_MLX_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "chatterbox-mlx"


def hash_cache_path() -> Path:
    return cache_root() / "sha256.json"


def read_hash_cache() -> dict[str, str]:
    try:
        data = json.loads(hash_cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_hash_cache(known: dict[str, str]) -> None:
    """Best effort (a read-only home just means hashing again next time); atomic, and
    no temporary is left behind, even when interrupted."""
    path = hash_cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as f:
            f.write(json.dumps(known).encode())
    except OSError:
        return


def cached_sha256(path: Path) -> str:
    """The file's sha256. Free for files in a Hugging Face cache (blobs are named by it);
    otherwise remembered per (path, size, mtime) so re-converting a folder is fast."""
    blob = path.resolve()
    if blob.parent.name == "blobs" and len(blob.name) == 64:
        try:
            int(blob.name, 16)
            return blob.name
        except ValueError:
            pass
    stat = blob.stat()
    key = f"{blob}:{stat.st_size}:{stat.st_mtime_ns}"
    known = read_hash_cache()
    if key in known:
        return known[key]
    known[key] = sha256_file(blob)
    write_hash_cache(known)
    return known[key]
