"""Original-layout model directories (as on the hub) built from random checkpoints."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from chatterbox_mlx.variants import get_variant

from tests.helpers import tokenizer_files
from tests.helpers.checkpoints import cached_checkpoint
from tests.helpers.torch_zip import write_conds

# variant -> (T3 layout, S3Gen layout) in tests/helpers/layouts
LAYOUTS = {
    "english": ("t3_cfg", "s3gen"),
    "multilingual": ("t3_mtl", "s3gen"),
    "multilingual-v3": ("t3_mtl", "s3gen"),
    "turbo": ("t3_turbo", "s3gen_meanflow"),
    "nano": ("t3_nano", "s3gen_meanflow"),
}


def write_text_files(directory: Path, variant: str) -> None:
    if variant in ("turbo", "nano"):
        tokenizer_files.write_gpt2_tokenizer(directory)
    elif variant.startswith("multilingual"):
        tokenizer_files.write_mtl_tokenizer(directory / "grapheme_mtl_merged_expanded_v1.json")
        tokenizer_files.write_cangjie(directory / "Cangjie5_TC.json")
    else:
        tokenizer_files.write_english_tokenizer(directory / "tokenizer.json")


def make_source(directory: Path, variant: str, seed: int = 0) -> Path:
    """A full-size original checkpoint directory: symlinks into the test cache for the
    weights, plus a real-layout ``conds.pt`` and tokenizer files."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    var = get_variant(variant)
    t3_layout, s3gen_layout = LAYOUTS[var.name]
    os.symlink(cached_checkpoint("ve", seed), directory / var.ve_file)
    os.symlink(cached_checkpoint(t3_layout, seed), directory / var.t3_file)
    os.symlink(cached_checkpoint(s3gen_layout, seed), directory / var.s3gen_file)
    write_conds(directory / "conds.pt", var.name, seed=seed)
    write_text_files(directory, var.name)
    return directory


def converted_dir(variant: str, seed: int = 0) -> Path:
    """A converted MLX directory of ``variant`` in the test cache (converted once)."""
    from chatterbox_mlx.checkpoints.convert import convert
    from chatterbox_mlx.checkpoints.layout import FORMAT_VERSION

    from tests.helpers.checkpoints import cache_dir

    out = cache_dir() / f"converted-{variant}-seed{seed}-v{FORMAT_VERSION}"
    if not (out / "config.json").exists():
        source = cache_dir() / f"source-{variant}-seed{seed}"
        shutil.rmtree(source, ignore_errors=True)
        convert(make_source(source, variant, seed), out)
    return out


def short_prompt(model, tokens: int = 25):
    """The model with its built-in voice's S3Gen prompt cut to ``tokens`` (quick tests)."""
    import mlx.core as mx

    gen = model.conds.gen
    gen.prompt_token = gen.prompt_token[:, :tokens]
    gen.prompt_token_len = mx.array([tokens], dtype=mx.int32)
    gen.prompt_feat = gen.prompt_feat[:, : 2 * tokens]
    return model
