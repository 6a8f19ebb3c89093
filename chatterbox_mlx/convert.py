"""Convert an original Chatterbox checkpoint (hub repo or local directory) to MLX.

    python convert.py --hf-path ResembleAI/chatterbox-turbo --mlx-path chatterbox-turbo-mlx

The output directory holds one safetensors file per network (MLX names and layouts,
produced by each network's own ``sanitize``), the built-in voice as
``conds.safetensors``, the tokenizer files, and ``config.json`` (variant, every
network's config, dtype, quantization, provenance). It is written into a temporary
sibling directory and renamed at the end, so a failed conversion leaves nothing behind.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from .variants import Variant, default_variant_for_repo, detect_variant, get_variant
from .weights import CheckpointError, load_safetensors, load_strict, strip_prefix

FORMAT_NAME = "chatterbox-mlx"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
CONDS_FILE = "conds.safetensors"
DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}
# Networks that only run when cloning a voice (their outputs feed discrete tokens /
# embeddings) stay float32 whatever --dtype says.
FLOAT32_NETWORKS = ("s3tokenizer", "campplus", "voice_encoder")


class ConversionError(ValueError):
    """The source cannot be converted (missing files, bad options, unwritable output)."""


@dataclass(frozen=True)
class Network:
    name: str  # also the output file stem
    module: str
    config_class: str
    model_class: str
    source: str  # which source file: "t3", "s3gen" or "ve"
    prefix: str  # key prefix inside that file
    label: str


# Cheap networks first, so a bad file fails before the 2 GB T3 is processed.
NETWORKS = (
    Network("voice_encoder", "voice_encoder", "VoiceEncoderConfig", "VoiceEncoder", "ve", "", "VE"),
    Network(
        "s3tokenizer",
        "s3tokenizer",
        "S3TokenizerConfig",
        "S3TokenizerV2",
        "s3gen",
        "tokenizer.",
        "S3Tokenizer",
    ),
    Network(
        "campplus",
        "campplus",
        "CAMPPlusConfig",
        "CAMPPlus",
        "s3gen",
        "speaker_encoder.",
        "CAMPPlus",
    ),
    Network("flow", "flow", "FlowConfig", "CausalMaskedDiffWithXvec", "s3gen", "flow.", "flow"),
    Network("hift", "hift", "HiFTConfig", "HiFTGenerator", "s3gen", "mel2wav.", "HiFT"),
    Network("t3", "t3", "T3Config", "T3", "t3", "", "T3"),
)


def network_module(net: Network):
    try:
        return importlib.import_module(f"chatterbox_mlx.models.{net.module}")
    except ImportError as err:
        raise ConversionError(
            f"the {net.label} network (chatterbox_mlx.models.{net.module}) is not available "
            f"in this build: {err}"
        ) from err


def default_config(net: Network, variant: Variant):
    """The network's config for ``variant`` (each module's named constructors)."""
    cls = getattr(network_module(net), net.config_class)
    if net.name == "t3":
        return getattr(cls, variant.t3_config)()
    if net.name == "flow":
        return cls.meanflow_config() if variant.meanflow else cls.english()
    if net.name == "hift" and hasattr(cls, "s3gen"):
        return cls.s3gen()
    return cls()


def config_from_dict(net: Network, data: Mapping):
    cls = getattr(network_module(net), net.config_class)
    return cls.from_dict(dict(data)) if hasattr(cls, "from_dict") else cls(**data)


def config_to_dict(config) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(config)))  # tuples -> lists


def build_model(net: Network, config, quantization: Mapping | None = None):
    """An (unloaded) model; quantized layers are made first so the weights fit."""
    module = network_module(net)
    model = getattr(module, net.model_class)(config)
    if quantization and net.name == "t3":
        module.quantize_t3(model, quantization["bits"], quantization["group_size"])
    return model


# ---------------------------------------------------------------------------- sources


def sha256_file(path: Path, chunk: int = 1 << 24) -> str:
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
    digest = hashlib.sha256()
    with open(blob, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    known[key] = digest.hexdigest()
    write_hash_cache(known)
    return known[key]


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
    """Best effort (a read-only home just means hashing again next time); atomic."""
    path = hash_cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".sha256.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(known, f)
        os.replace(tmp, path)
    except OSError:
        pass


def get_hint(variant: Variant, files: list[str]) -> str:
    return f"huggingface-cli download {variant.repo_id} {' '.join(files)} --local-dir DIR"


def source_path(directory: Path, variant: Variant, name: str) -> Path:
    """A required file, or its torch-pickle fallback (Multilingual's ve.pt/s3gen.pt)."""
    path = directory / name
    fallback = variant.fallback_files.get(name)
    if not path.is_file() and fallback and (directory / fallback).is_file():
        return directory / fallback
    return path


def check_source(directory: Path, variant: Variant) -> None:
    wanted = variant.required_files
    missing = [n for n in wanted if not source_path(directory, variant, n).is_file()]
    if missing:
        raise ConversionError(
            f"{directory} lacks {len(missing)} file(s) of the {variant.name} checkpoint: "
            f"{', '.join(missing)}.\nGet them with: {get_hint(variant, missing)}"
        )


def load_tensors(path: Path) -> dict[str, mx.array]:
    """safetensors lazily; a torch pickle (.pt) through the torch-free reader."""
    if path.suffix != ".pt":
        return load_safetensors(path)
    from . import torch_pickle

    # upstream reads these with torch.load(weights_only=True), which also allows Parameters
    state = torch_pickle.load(path, extra_globals=["torch._utils._rebuild_parameter"])
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: expected a state_dict, got {type(state).__name__}")
    return {k: mx.array(v) for k, v in state.items() if isinstance(v, np.ndarray)}


def source_weights(directory: Path, variant: Variant) -> dict[str, Path]:
    return {
        "t3": source_path(directory, variant, variant.t3_file),
        "s3gen": source_path(directory, variant, variant.s3gen_file),
        "ve": source_path(directory, variant, variant.ve_file),
    }


# ---------------------------------------------------------------------------- networks


def cast_floats(params: dict[str, mx.array], dtype) -> dict[str, mx.array]:
    return {
        k: v.astype(dtype) if mx.issubdtype(v.dtype, mx.floating) else v for k, v in params.items()
    }


def convert_network(
    net: Network,
    weights: Mapping[str, mx.array],
    config,
    dtype: str,
    quantization: Mapping | None,
    source_name: str,
) -> dict[str, mx.array]:
    """Sanitize, validate strictly against the model, cast and quantize one network."""
    module = network_module(net)
    tensors = strip_prefix(weights, net.prefix) if net.prefix else dict(weights)
    if not tensors:
        raise CheckpointError(f"{source_name}: no tensors under '{net.prefix}' ({net.label})")
    model = build_model(net, config)
    what = f"{net.label} ({source_name}{', ' + net.prefix + '*' if net.prefix else ''})"
    try:
        load_strict(model, module.sanitize(tensors), what)
    except CheckpointError:
        raise
    except ValueError as err:  # a transform failing on a mis-shaped tensor
        raise CheckpointError(f"{what}: {err}") from err
    if net.name not in FLOAT32_NETWORKS and dtype != "float32":
        model.update(_unflatten(cast_floats(dict(tree_flatten(model.parameters())), DTYPES[dtype])))
    if quantization and net.name == "t3":
        module.quantize_t3(model, quantization["bits"], quantization["group_size"])
    return dict(tree_flatten(model.parameters()))


def _unflatten(flat: dict[str, mx.array]):
    from mlx.utils import tree_unflatten

    return tree_unflatten(list(flat.items()))


def network_dtype(name: str, dtype: str) -> str:
    return "float32" if name in FLOAT32_NETWORKS else dtype


# ---------------------------------------------------------------------------- conds


def conds_tensors(path: Path) -> dict[str, mx.array]:
    """``conds.pt`` -> flat ``{"t3.speaker_emb": ..., "gen.prompt_feat": ...}``
    (None entries omitted), the layout of ``Conditionals.save``."""
    from . import torch_pickle

    data = torch_pickle.load(path)
    if not (isinstance(data, Mapping) and {"t3", "gen"} <= set(data)):
        raise ConversionError(f"{path}: not a Chatterbox built-in voice (no 't3'/'gen' entries)")
    out = {}
    for part in ("t3", "gen"):
        for key, value in data[part].items():
            if value is None:
                continue
            if isinstance(value, (int, float)):
                value = np.asarray(value)
            if not isinstance(value, np.ndarray):
                raise ConversionError(f"{path}: {part}.{key} is a {type(value).__name__}")
            out[f"{part}.{key}"] = mx.array(value)
    return out


def save_conds(path: Path, conds_pt: Path) -> None:
    from .conditionals import Conditionals

    try:
        conds = Conditionals.from_flat(conds_tensors(conds_pt), str(conds_pt))
    except ValueError as err:
        raise ConversionError(f"{conds_pt}: not a usable built-in voice ({err})") from err
    conds.save(path)


# ---------------------------------------------------------------------------- output


def prepare_output(mlx_path: Path) -> Path:
    """A fresh temporary directory beside ``mlx_path`` (same filesystem: atomic rename)."""
    if mlx_path.exists():
        raise ConversionError(
            f"cannot save to {mlx_path}: it already exists. Delete it or choose another --mlx-path."
        )
    parent = mlx_path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{mlx_path.name}.", suffix=".tmp", dir=parent))
    except OSError as err:
        raise ConversionError(
            f"cannot write to {parent}: {err.strerror or err}. Choose a writable --mlx-path."
        ) from err
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the result should not be
    return tmp


def publish(tmp: Path, mlx_path: Path) -> None:
    try:
        os.rename(tmp, mlx_path)
    except OSError as err:
        raise ConversionError(f"cannot move the result into {mlx_path}: {err}") from err


def provenance(directory: Path, files: list[Path], repo: str | None, revision: str | None):
    return {
        "repo": repo,
        "revision": revision,
        "directory": None if repo else str(directory.resolve()),
        "files": {
            p.name: {"sha256": sha256_file(p), "size": p.stat().st_size} for p in sorted(files)
        },
    }


def resolve_variant(directory: Path, variant: str | Variant | None, repo: str | None) -> Variant:
    if isinstance(variant, Variant):
        return variant
    if variant is not None:
        return get_variant(variant)
    return detect_variant(directory, repo)


def convert(
    source: str | Path,
    mlx_path: str | Path,
    variant: str | Variant | None = None,
    dtype: str = "float32",
    quantize: bool = False,
    q_bits: int = 4,
    q_group_size: int = 64,
    revision: str | None = None,
    upload_repo: str | None = None,
    repo: str | None = None,
) -> Path:
    """Convert ``source`` (local dir or hub repo id) into the MLX directory ``mlx_path``."""
    quantization = check_options(dtype, quantize, q_bits, q_group_size)
    mlx_path = Path(mlx_path)
    directory = Path(source)
    is_repo = not directory.is_dir()
    if is_repo and (directory.exists() or not looks_like_repo_id(str(source))):
        raise ConversionError(f"{source} is neither a checkpoint directory nor a hub repo id")
    if is_repo:
        variant = resolve_variant_for_repo(str(source), variant)
    elif variant is not None and not isinstance(variant, Variant):
        variant = get_variant(variant)
    tmp = prepare_output(mlx_path)  # fails early (before any download) when unwritable
    try:
        if is_repo:
            from .hub import download_original

            directory, revision = download_original(str(source), variant, revision)
            repo = str(source)
        var = resolve_variant(directory, variant, repo)
        check_source(directory, var)
        config = write_networks(tmp, directory, var, dtype, quantization)
        save_conds(tmp / CONDS_FILE, directory / var.conds_file)
        copied = copy_tokenizer(tmp, directory, var)
        used = [*source_weights(directory, var).values(), directory / var.conds_file]
        config.update(
            tokenizer_files=copied,
            generation=var.generation,
            source=provenance(directory, used + [directory / n for n in copied], repo, revision),
        )
        write_json(tmp / CONFIG_FILE, config)
        publish(tmp, mlx_path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if upload_repo:
        upload_to_hub(mlx_path, upload_repo, var)
    return mlx_path


def looks_like_repo_id(name: str) -> bool:
    return name.count("/") == 1 and not name.startswith((".", "/", "~"))


def check_options(dtype: str, quantize: bool, q_bits: int, q_group_size: int) -> dict | None:
    """The quantization settings, after checking every option (before any work)."""
    if dtype not in DTYPES:
        raise ConversionError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if not quantize:
        return None
    if q_bits not in (4, 8):
        raise ConversionError(f"--q-bits must be 4 or 8, got {q_bits}")
    if q_group_size not in (32, 64, 128):
        raise ConversionError(f"--q-group-size must be 32, 64 or 128, got {q_group_size}")
    return {"bits": q_bits, "group_size": q_group_size}


def resolve_variant_for_repo(repo: str, variant: str | Variant | None) -> Variant | None:
    if isinstance(variant, Variant):
        return variant
    if variant is not None:
        return get_variant(variant)
    return default_variant_for_repo(repo)


def write_networks(
    out: Path, directory: Path, variant: Variant, dtype: str, quantization: Mapping | None
) -> dict:
    sources = source_weights(directory, variant)
    loaded: dict[str, dict[str, mx.array]] = {}
    networks = {}
    for net in NETWORKS:
        if net.source not in loaded:
            loaded = {net.source: load_tensors(sources[net.source])}  # one file in memory
            check_prefixes(net.source, loaded[net.source], sources[net.source].name)
        config = default_config(net, variant)
        params = convert_network(
            net, loaded[net.source], config, dtype, quantization, sources[net.source].name
        )
        mx.save_safetensors(str(out / f"{net.name}.safetensors"), params, {"format": "mlx"})
        del params
        networks[net.name] = {
            "file": f"{net.name}.safetensors",
            "dtype": network_dtype(net.name, dtype),
            "config": config_to_dict(config),
        }
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "variant": variant.name,
        "dtype": dtype,
        "quantization": dict(quantization, networks=["t3"]) if quantization else None,
        "networks": networks,
        "conds_file": CONDS_FILE,
    }


def check_prefixes(source: str, weights: Mapping[str, mx.array], file_name: str) -> None:
    """Every tensor of a combined file (s3gen) must belong to one of its networks."""
    prefixes = tuple(n.prefix for n in NETWORKS if n.source == source)
    if "" in prefixes:
        return
    stray = sorted(k for k in weights if not k.startswith(prefixes))
    if stray:
        raise CheckpointError(
            f"{file_name}: {len(stray)} unexpected tensors outside {', '.join(prefixes)}: "
            f"{', '.join(stray[:20])}"
        )


def copy_tokenizer(out: Path, directory: Path, variant: Variant) -> list[str]:
    copied = []
    for name in (*variant.tokenizer_files, *variant.optional_files):
        if (directory / name).is_file():
            shutil.copyfile(directory / name, out / name)
            copied.append(name)
    return copied


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def upload_to_hub(path: Path, upload_repo: str, variant: Variant) -> None:
    from huggingface_hub import HfApi

    card = (
        f"---\nlibrary_name: mlx\nbase_model: {variant.repo_id}\ntags: [mlx, tts, chatterbox]\n"
        f"---\n# {upload_repo}\n\nChatterbox {variant.name} converted to MLX from "
        f"[{variant.repo_id}](https://huggingface.co/{variant.repo_id}) with chatterbox-mlx.\n"
    )
    (path / "README.md").write_text(card)
    api = HfApi()
    api.create_repo(repo_id=upload_repo, exist_ok=True)
    api.upload_folder(folder_path=str(path), repo_id=upload_repo, repo_type="model")
    print(f"Uploaded to https://huggingface.co/{upload_repo}")


# ---------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Convert Chatterbox checkpoints to MLX.")
    parser.add_argument(
        "--hf-path", required=True, help="hub repo id or local directory of the original model"
    )
    parser.add_argument("--mlx-path", default=None, help="output directory (must not exist)")
    parser.add_argument(
        "--variant",
        default=None,
        help="english, multilingual (v2), multilingual-v3, turbo or nano "
        "(default: detected from the files)",
    )
    parser.add_argument("--revision", default=None, help="hub revision (branch, tag or commit)")
    parser.add_argument("-q", "--quantize", action="store_true", help="quantize T3")
    parser.add_argument("--q-bits", type=int, default=4, choices=(4, 8), help="bits per weight")
    parser.add_argument("--q-group-size", type=int, default=64, help="quantization group size")
    parser.add_argument("--dtype", default="float32", choices=tuple(DTYPES), help="parameter dtype")
    parser.add_argument("--upload-repo", default=None, help="hub repo to upload the result to")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    mlx_path = args.mlx_path or f"{Path(str(args.hf_path).rstrip('/')).name}-mlx"
    try:
        out = convert(
            args.hf_path,
            mlx_path,
            variant=args.variant,
            dtype=args.dtype,
            quantize=args.quantize,
            q_bits=args.q_bits,
            q_group_size=args.q_group_size,
            revision=args.revision,
            upload_repo=args.upload_repo,
        )
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"Saved the MLX model to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
