"""Convert an original Chatterbox checkpoint (hub repo or local directory) to MLX.

    python convert.py ResembleAI/chatterbox-turbo -o chatterbox-turbo-mlx
    python convert.py --hf-path ResembleAI/chatterbox-turbo --mlx-path chatterbox-turbo-mlx

The output is a folder in the format of ``chatterbox_mlx.checkpoints.layout``: one safetensors
file per network (MLX names and layouts, produced by each network's own ``sanitize``),
the built-in voice, the tokenizer files and ``config.json``. It is written into a hidden
temporary sibling directory and renamed at the end, so a failed or interrupted
conversion (Ctrl-C, SIGTERM) leaves nothing behind.

Command line exit codes: 0 done, 1 bad input or a failure (``error: ...`` on stderr,
detail lines indented below it), 2 bad arguments, 130 Ctrl-C, 143 SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from ..models.weights import (
    CheckpointError,
    check_finite_tensors,
    load_safetensors,
    load_strict,
    strip_prefix,
)
from ..variants import Variant, default_variant_for_repo, detect_variant, get_variant
from ..voice.conditionals import Conditionals
from . import torch_pickle
from .layout import (
    CONDS_FILE,
    DTYPES,
    NETWORKS,
    QUANTIZATION_BITS,
    QUANTIZATION_GROUP_SIZES,
    Network,
    new_config,
    write_config,
)
from .originals import (
    check_source,
    download_original,
    looks_like_repo_id,
    sha256_file,
    source_files,
)


class ConversionError(ValueError):
    """The source cannot be converted (not a checkpoint, bad options, unwritable output)."""


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that cleanup runs as it does for Ctrl-C."""


# ---------------------------------------------------------------------------- sources


def load_tensors(path: Path) -> dict[str, mx.array]:
    """safetensors lazily; a torch pickle (.pt) through the torch-free reader."""
    if path.suffix != ".pt":
        return load_safetensors(path)
    # upstream reads these with torch.load(weights_only=True), which also allows Parameters
    state = torch_pickle.load(path, extra_globals=["torch._utils._rebuild_parameter"])
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: expected a state_dict, got {type(state).__name__}")
    return {k: mx.array(v) for k, v in state.items() if isinstance(v, np.ndarray)}


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


def conds_tensors(path: Path) -> dict[str, mx.array]:
    """``conds.pt`` -> flat ``{"t3.speaker_emb": ..., "gen.prompt_feat": ...}``
    (None entries omitted), the layout of ``Conditionals.save``."""
    data = torch_pickle.load(path)
    if not (isinstance(data, Mapping) and {"t3", "gen"} <= set(data)):
        raise ConversionError(f"{path}: not a Chatterbox built-in voice (no 't3'/'gen' entries)")
    out = {}
    for part in ("t3", "gen"):
        if not isinstance(data[part], Mapping):
            raise ConversionError(f"{path}: {part} is a {type(data[part]).__name__}, not a dict")
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
    tensors = conds_tensors(conds_pt)
    check_finite_tensors(tensors, f"the built-in voice ({conds_pt})")
    try:
        conds = Conditionals.from_flat(tensors, str(conds_pt))
    except ValueError as err:
        raise ConversionError(f"{conds_pt}: not a usable built-in voice ({err})") from err
    conds.save(path)


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
    """Sanitize, validate strictly (names, shapes, finiteness), cast and quantize one network."""
    tensors = strip_prefix(weights, net.prefix) if net.prefix else dict(weights)
    if not tensors:
        raise CheckpointError(f"{source_name}: no tensors under '{net.prefix}' ({net.label})")
    model = net.build(config)
    what = f"{net.label} ({source_name}{', ' + net.prefix + '*' if net.prefix else ''})"
    try:
        load_strict(model, net.sanitize(tensors), what)
    except CheckpointError:
        raise
    except ValueError as err:  # a transform failing on a mis-shaped tensor
        raise CheckpointError(f"{what}: {err}") from err
    stored = net.stored_dtype(dtype)
    if stored != "float32":
        flat = cast_floats(dict(tree_flatten(model.parameters())), DTYPES[stored])
        model.update(tree_unflatten(list(flat.items())))
    if quantization and net.quantize is not None:
        net.quantize(model, quantization["bits"], quantization["group_size"])
    return dict(tree_flatten(model.parameters()))


def write_networks(
    out: Path, directory: Path, variant: Variant, dtype: str, quantization: Mapping | None
) -> dict[str, object]:
    """Each network's file in ``out``; returns each network's config."""
    sources = source_files(directory, variant)
    loaded: dict[str, dict[str, mx.array]] = {}
    configs = {}
    for net in NETWORKS:
        if net.source not in loaded:
            loaded = {net.source: load_tensors(sources[net.source])}  # one file in memory
            check_prefixes(net.source, loaded[net.source], sources[net.source].name)
        configs[net.name] = net.default_config(variant)
        params = convert_network(
            net,
            loaded[net.source],
            configs[net.name],
            dtype,
            quantization,
            sources[net.source].name,
        )
        mx.save_safetensors(str(out / net.file), params, {"format": "mlx"})
        del params
    return configs


def copy_tokenizer(out: Path, directory: Path, variant: Variant) -> list[str]:
    copied = []
    for name in (*variant.tokenizer_files, *variant.optional_files):
        if (directory / name).is_file():
            shutil.copyfile(directory / name, out / name)
            copied.append(name)
    return copied


def provenance(directory: Path, files: list[Path], repo: str | None, revision: str | None):
    return {
        "repo": repo,
        "revision": revision,
        "directory": None if repo else str(directory.resolve()),
        "files": {
            p.name: {"sha256": sha256_file(p), "size": p.stat().st_size} for p in sorted(files)
        },
    }


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


def remove_tree(path: Path) -> None:
    """``rmtree`` with Ctrl-C and SIGTERM held until it is done, so that a second signal
    cannot leave half a temporary directory behind."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows
        shutil.rmtree(path, ignore_errors=True)
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        shutil.rmtree(path, ignore_errors=True)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def publish(tmp: Path, mlx_path: Path) -> None:
    try:
        os.rename(tmp, mlx_path)
    except OSError as err:
        raise ConversionError(f"cannot move the result into {mlx_path}: {err}") from err


# ---------------------------------------------------------------------------- convert


def check_options(dtype: str, quantize: bool, q_bits: int, q_group_size: int) -> dict | None:
    """The quantization settings, after checking every option (before any work)."""
    if dtype not in DTYPES:
        raise ConversionError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if not quantize:
        return None
    if q_bits not in QUANTIZATION_BITS:
        raise ConversionError(f"--q-bits must be 4 or 8, got {q_bits}")
    if q_group_size not in QUANTIZATION_GROUP_SIZES:
        raise ConversionError(f"--q-group-size must be 32, 64 or 128, got {q_group_size}")
    return {"bits": q_bits, "group_size": q_group_size}


def _variant(variant: str | Variant | None) -> Variant | None:
    return variant if variant is None or isinstance(variant, Variant) else get_variant(variant)


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
    """Convert ``source`` (local dir or hub repo id) into the MLX directory ``mlx_path``.

    ``repo`` names the hub repo a local ``source`` was downloaded from (provenance)."""
    quantization = check_options(dtype, quantize, q_bits, q_group_size)
    mlx_path = Path(mlx_path)
    directory = Path(source)
    is_repo = not directory.is_dir()
    if is_repo and (directory.exists() or not looks_like_repo_id(str(source))):
        raise ConversionError(f"{source} is neither a checkpoint directory nor a hub repo id")
    chosen = _variant(variant)
    if is_repo and chosen is None:
        chosen = default_variant_for_repo(str(source))
    tmp = prepare_output(mlx_path)  # fails early (before any download) when unwritable
    try:
        if is_repo:
            directory, revision = download_original(str(source), chosen, revision)
            repo = str(source)
        var = chosen or detect_variant(directory, repo)
        check_source(directory, var)
        conds_pt = directory / var.conds_file
        save_conds(tmp / CONDS_FILE, conds_pt)  # small: a bad voice fails before the networks
        configs = write_networks(tmp, directory, var, dtype, quantization)
        copied = copy_tokenizer(tmp, directory, var)
        used = [*source_files(directory, var).values(), conds_pt, *(directory / n for n in copied)]
        source_info = provenance(directory, used, repo, revision)
        write_config(tmp, new_config(var, dtype, quantization, configs, copied, source_info))
        publish(tmp, mlx_path)
    finally:
        remove_tree(tmp)
    if upload_repo:
        upload_to_hub(mlx_path, upload_repo, var)
    return mlx_path


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
    parser = argparse.ArgumentParser(
        prog="convert.py", description="Convert Chatterbox checkpoints to MLX."
    )
    # not required=True: argparse would then report a missing SOURCE before an unknown
    # option (``convert.py --bogus`` must name --bogus); main checks it after parsing
    src = parser.add_mutually_exclusive_group()
    src.add_argument(
        "source",
        nargs="?",
        metavar="SOURCE",
        help="hub repo id or local directory of the original model",
    )
    src.add_argument("--hf-path", help="the same as SOURCE (mlx-lm's name for it)")
    parser.add_argument(
        "-o",
        "--mlx-path",
        default=None,
        help="output directory (must not exist; default: SOURCE's name + '-mlx')",
    )
    parser.add_argument(
        "--variant",
        default=None,
        help="english, multilingual (v2), multilingual-v3, turbo or nano "
        "(default: detected from the files)",
    )
    parser.add_argument("--revision", default=None, help="hub revision (branch, tag or commit)")
    parser.add_argument("-q", "--quantize", action="store_true", help="quantize T3")
    parser.add_argument(
        "--q-bits", type=int, default=4, choices=QUANTIZATION_BITS, help="bits per weight"
    )
    parser.add_argument("--q-group-size", type=int, default=64, help="quantization group size")
    parser.add_argument("--dtype", default="float32", choices=tuple(DTYPES), help="parameter dtype")
    parser.add_argument("--upload-repo", default=None, help="hub repo to upload the result to")
    return parser


def format_error(err: BaseException) -> str:
    """``error: <first line>``, then the message's detail lines indented below it."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    lines = lines or [type(err).__name__]
    return "\n".join([f"error: {lines[0]}", *(f"  {line}" for line in lines[1:])])


@contextlib.contextmanager
def sigterm_raises():
    """While inside, SIGTERM raises :class:`Terminated` (once; a second one is ignored
    while the first is being cleaned up). Only the main thread can handle signals."""

    def terminate(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def stopped(why: str, mlx_path: Path) -> str:
    if mlx_path.exists():
        return f"{why} after the model was saved to {mlx_path}"
    return f"{why}: the unfinished conversion was removed; nothing was written to {mlx_path}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    source = args.source or args.hf_path
    if not source:
        parser.error("one of the arguments SOURCE --hf-path is required")
    mlx_path = Path(args.mlx_path or f"{Path(str(source).rstrip('/')).name}-mlx")
    try:
        with sigterm_raises():
            out = convert(
                source,
                mlx_path,
                variant=args.variant,
                dtype=args.dtype,
                quantize=args.quantize,
                q_bits=args.q_bits,
                q_group_size=args.q_group_size,
                revision=args.revision,
                upload_repo=args.upload_repo,
            )
    except KeyboardInterrupt:
        print(stopped("interrupted", mlx_path), file=sys.stderr)
        return 130
    except Terminated:
        print(stopped("terminated (SIGTERM)", mlx_path), file=sys.stderr)
        return 143
    except (ValueError, OSError, RuntimeError) as err:  # RuntimeError: MLX's file errors
        print(format_error(err), file=sys.stderr)
        return 1
    print(f"Saved the MLX model to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
