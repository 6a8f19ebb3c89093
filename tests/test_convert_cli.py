"""The converter's command line (``convert.py``, ``checkpoints.convert.main``): its
options, one table of bad inputs (exit code, the lines printed, nothing left behind), and
the real script signalled mid-conversion."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from chatterbox_mlx.checkpoints import convert

import numpy as np
import pytest

from tests.helpers.checkpoints import write_checkpoint
from tests.helpers.sources import make_source
from tests.helpers.torch_zip import conds_object, write_conds, write_torch_zip

pytestmark = pytest.mark.usefixtures("offline_env")


def test_top_level_script_help():
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, str(root / "convert.py"), "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    for option in (
        "--hf-path",
        "--mlx-path",
        "--q-bits",
        "--q-group-size",
        "--dtype",
        "--upload-repo",
    ):
        assert option in result.stdout


# ---------------------------------------------------------------------------- the CLI


def test_source_is_positional_or_hf_path(tmp_path):
    parser = convert.build_parser()
    a = parser.parse_args(["ResembleAI/chatterbox-turbo", "-o", "out", "-q", "--q-bits", "8"])
    b = parser.parse_args(["--hf-path", "ResembleAI/chatterbox-turbo", "--mlx-path", "out"])
    assert (a.source or a.hf_path) == (b.source or b.hf_path) == "ResembleAI/chatterbox-turbo"
    assert a.mlx_path == b.mlx_path == "out" and a.quantize and a.q_bits == 8


def all_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _nan_ve(source: Path) -> None:
    def poison(key, value):
        if key == "proj.bias":
            value = value.copy()
            value[:2] = [np.nan, np.inf]
        return value

    write_checkpoint("ve", source, transform=poison)


def _hostile_conds(source: Path) -> None:
    from tests.helpers.torch_zip import StridedTensor

    obj = conds_object("english")
    obj["gen"]["prompt_feat"] = StridedTensor(np.ones(1, np.float32), (10**6, 10**6), (0, 0))
    write_torch_zip(source / "conds.pt", obj)


def _unsafe_conds(source: Path) -> None:
    write_conds(source / "conds.pt", extra_global=("os", "system"), extra_args=("true",))


def _blocker(tmp_path: Path) -> Path:
    (tmp_path / "a_file").write_text("not a directory")
    return tmp_path / "a_file" / "out"


def _existing(tmp_path: Path) -> Path:
    (tmp_path / "existing").mkdir()
    return tmp_path / "existing"


# id, damage to the source, output (default tmp/out), arguments ({src}, {out}), exit code,
# the first line printed (regex), a detail line printed below it (regex) or None
CLI_CASES = [
    ("no source", None, None, ["-o", "{out}"], 2, r"usage: convert\.py", None),
    ("two sources", None, None, ["{src}", "--hf-path", "{src}"], 2, r"usage:", None),
    ("bad dtype", None, None, ["{src}", "-o", "{out}", "--dtype", "float8"], 2, r"usage:", None),
    ("bad q-bits", None, None, ["{src}", "-o", "{out}", "-q", "--q-bits", "3"], 2, "usage:", None),
    (
        "nowhere", None, None, ["{src}/no/such/dir", "-o", "{out}"], 1,
        r"error: .*/no/such/dir is neither a checkpoint directory nor a hub repo id$", None,
    ),
    (
        "bad group size", None, None, ["{src}", "-o", "{out}", "-q", "--q-group-size", "100"], 1,
        r"error: --q-group-size must be 32, 64 or 128, got 100$", None,
    ),
    (
        "unknown variant", None, None, ["{src}", "-o", "{out}", "--variant", "klingon"], 1,
        r"error: unknown variant 'klingon'; choose one of: english", None,
    ),
    (
        "output exists", None, _existing, ["{src}", "-o", "{out}"], 1,
        r"error: cannot save to .*existing: it already exists\.", None,
    ),
    (
        "unwritable output", None, _blocker, ["{src}", "--mlx-path", "{out}"], 1,
        r"error: cannot write to .*a_file: .*\. Choose a writable --mlx-path\.$", None,
    ),
    (
        "missing files", lambda s: (s / "tokenizer.json").unlink(), None, ["{src}", "-o", "{out}"],
        1, r"error: .*source lacks 1 file\(s\) of the english checkpoint: tokenizer\.json\.$",
        r"^  Get them with: huggingface-cli download ResembleAI/chatterbox tokenizer\.json",
    ),
    (
        "variant files absent", None, None, ["{src}", "-o", "{out}", "--variant", "turbo"], 1,
        r"error: .* of the turbo checkpoint: t3_turbo_v1\.safetensors, s3gen_meanflow",
        r"^  Get them with: huggingface-cli download ResembleAI/chatterbox-turbo",
    ),
    (
        "truncated tensor file",
        lambda s: (s / "ve.safetensors").write_bytes((s / "ve.safetensors").read_bytes()[:4096]),
        None, ["{src}", "-o", "{out}"], 1, r"error: cannot read .*ve\.safetensors: .*truncated",
        None,
    ),
    (
        "wrong shape",
        lambda s: write_checkpoint(
            "ve", s, transform=lambda k, v: v[:, :-1] if k == "proj.weight" else v
        ),
        None, ["{src}", "-o", "{out}"], 1,
        r"error: VE \(ve\.safetensors\): checkpoint does not match the model \(1 problem\):$",
        r"^  wrong shape proj\.weight: \(256, 255\), expected \(256, 256\)$",
    ),
    (
        "non-finite tensor", _nan_ve, None, ["{src}", "-o", "{out}"], 1,
        r"error: VE \(ve\.safetensors\): 1 tensor with NaN or infinite values",
        r"^  non-finite proj\.bias: 2 NaN or infinite of 256 values$",
    ),
    (
        "unsafe pickle", _unsafe_conds, None, ["{src}", "-o", "{out}"], 1,
        r"error: .*conds\.pt: refusing to load global 'os\.system'", None,
    ),
    (
        "tensor past its storage", _hostile_conds, None, ["{src}", "-o", "{out}"], 1,
        r"error: .*conds\.pt: tensor gen\.prompt_feat .* spans 1000000000000 elements .* "
        r"holds 1 elements", None,
    ),
    (
        "not a voice", lambda s: write_torch_zip(s / "conds.pt", {"x": 1}), None,
        ["{src}", "-o", "{out}"], 1, r"error: .*conds\.pt: not a Chatterbox built-in voice", None,
    ),
    (
        "offline repo", None, None, ["ResembleAI/chatterbox-nano", "-o", "{out}"], 1,
        r"error: cannot get ResembleAI/chatterbox-nano: offline \(HF_HUB_OFFLINE is set\)\. "
        r"Files needed: ve\.safetensors t3_nano_v1\.safetensors",
        r"^  Download them while online \(unset HF_HUB_OFFLINE\): huggingface-cli download "
        r"ResembleAI/chatterbox-nano ve\.safetensors",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    "damage,output,args,code,first,detail",
    [c[1:] for c in CLI_CASES],
    ids=[c[0] for c in CLI_CASES],
)
def test_cli_bad_input(
    small_source, hf_cache, tmp_path, capsys, damage, output, args, code, first, detail
):
    """Each bad input: its exit code, the first line printed, the detail lines below it,
    no traceback, and no file or temporary left anywhere."""
    import re

    if damage is not None:
        damage(small_source)
    out = output(tmp_path) if output else tmp_path / "out"
    before = all_files(tmp_path)
    argv = [a.format(src=small_source, out=out) for a in args]
    try:
        exit_code = convert.main(argv)
    except SystemExit as stop:  # argparse's usage errors
        exit_code = stop.code
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert exit_code == code, captured.err
    assert captured.out == "" and "Traceback" not in captured.err
    first_line = lines[0] if code == 1 else captured.err
    assert re.search(first, first_line), captured.err
    if code == 1:
        assert lines[0].startswith("error: ")
        assert all(line.startswith("  ") for line in lines[1:]), captured.err
    if detail is not None:
        assert any(re.search(detail, line) for line in lines[1:]), captured.err
    assert all_files(tmp_path) == before  # nothing written, no temporary left


@pytest.mark.parametrize(
    "signum,code,said",
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated (SIGTERM)")],
    ids=["ctrl-c", "sigterm"],
)
def test_signal_mid_conversion_removes_the_temporary(tmp_path, signum, code, said):
    """The real script, signalled once the first network is written: no traceback, the
    exit code of the signal, a line saying so, and nothing left beside the output."""
    source = make_source(tmp_path / "source", "nano")
    out = tmp_path / "out"
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, HF_HUB_OFFLINE="1", CHATTERBOX_MLX_CACHE=str(tmp_path / "cache"))
    proc = subprocess.Popen(
        [sys.executable, str(root / "convert.py"), str(source), "-o", str(out)],
        cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # a shell's background job ignores SIGINT; the user's terminal does not
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        for _ in range(12_000):  # at most ~4 minutes
            if list(tmp_path.glob(".out.*.tmp/voice_encoder.safetensors")):
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.02)
        else:
            pytest.fail("the conversion never wrote its first network")
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr and stdout == ""
    assert stderr.splitlines()[-1] == (
        f"{said}: the unfinished conversion was removed; nothing was written to {out}"
    )
    assert not out.exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
