"""The command line as a user meets it: one table of bad inputs (exit code, the one line
printed, nothing left behind), real subprocesses, signals, and the output formats."""

import os
import signal
import subprocess
import sys
import time

import pytest
import soundfile as sf

from tests.helpers.sources import converted_dir

PER_TOKEN = 960


def run_cli(*args, stdin=None, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "chatterbox_mlx.generate", *args],
        input=stdin,
        capture_output=True,
        timeout=600,
        cwd=cwd,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.getcwd()},
    )


def nano():
    return str(converted_dir("nano"))


@pytest.mark.pipeline
@pytest.mark.slow
def test_cli_writes_every_format(tmp_path):
    model = nano()
    for name, subtype_rate in (("x.wav", 24000), ("x.flac", 24000), ("x.mp3", 24000),
                               ("x.opus", None)):  # fmt: skip
        out = tmp_path / name
        r = run_cli("--model", model, "--text", "Hi there.", "--max-new-tokens", "3",
                    "--seed", "0", "--no-watermark", "--out", str(out))  # fmt: skip
        assert r.returncode == 0, r.stderr
        info = sf.info(out)
        assert subtype_rate is None or info.samplerate == subtype_rate
        # 3 tokens + Turbo's 3 silence tokens, 960 samples each (MP3/Opus pad a little)
        assert abs(info.duration - 6 * PER_TOKEN / 24000) < 0.06, (name, info.duration)
    assert not list(tmp_path.glob(".*tmp*"))


@pytest.mark.pipeline
@pytest.mark.slow
def test_cli_stdout_and_stdin(tmp_path):
    r = run_cli("--model", nano(), "--max-new-tokens", "2", "--no-watermark", "--out", "-",
                "--format", "wav", stdin=b"Piped text.")  # fmt: skip
    assert r.returncode == 0, r.stderr
    path = tmp_path / "piped.wav"
    path.write_bytes(r.stdout)
    data, sr = sf.read(path)
    assert sr == 24000 and len(data) == 5 * PER_TOKEN


@pytest.mark.pipeline
@pytest.mark.slow
def test_cli_saved_voice_round_trip(tmp_path):
    voice = tmp_path / "built-in.voice"
    r = run_cli("voice", "save", "-o", str(voice), "--model", nano())
    assert r.returncode == 0, r.stderr
    out = tmp_path / "v.wav"
    r = run_cli("--model", nano(), "--voice", str(voice), "--text", "Hi.", "--max-new-tokens",
                "2", "--seed", "1", "--no-watermark", "--out", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr.decode()
    assert sf.info(out).frames == 5 * PER_TOKEN


BAD_UTF8 = b"caf\xe9 au lait"  # Latin-1, not UTF-8


def unsafe_original(source):
    """An original-layout English directory whose conds.pt calls os.system when unpickled
    (converted on first use: the built-in voice is read first, so T3/S3Gen are symlinks)."""
    from tests.helpers.checkpoints import cached_checkpoint, write_checkpoint
    from tests.helpers.sources import LAYOUTS
    from tests.helpers.sources import write_text_files as write_tokenizer_files
    from tests.helpers.torch_zip import write_conds

    source.mkdir()
    write_checkpoint("ve", source)
    for name in ("t3_cfg.safetensors", "s3gen.safetensors"):
        os.symlink(cached_checkpoint(LAYOUTS["english"][0 if "t3" in name else 1]), source / name)
    write_conds(source / "conds.pt", extra_global=("os", "system"), extra_args=("true",))
    write_tokenizer_files(source, "english")


@pytest.mark.parametrize(
    "args, stdin, message",
    [
        (["--text", "   "], None, "empty"),
        (["--text", "hi", "--voice", "/nonexistent/voice.wav"], None, "--voice"),
        (["--text", "hi", "--out", "/nonexistent-dir/x.wav"], None, "does not exist"),
        (["--text", "hi", "--out", "x.xyz"], None, "xyz"),
        (["--text", "hi", "--out", "."], None, "is a directory"),
        (["--vc", "/nonexistent/src.wav"], None, "not found"),
        (["--vc", "FILE", "--out", "y.wav"], None, "--vc needs --voice"),
        (["--model", "turbo", "--text", "hi", "--temperature", "nan"], None, "temperature"),
        (["--model", "turbo", "--text", "hi", "--temperature", "-1"], None, "temperature"),
        (["--model", "english", "--text", "hi", "--top-p", "0"], None, "top_p"),
        (["--model", "english", "--text", "hi", "--max-new-tokens", "0"], None, "max_new_tokens"),
        (["--model", "english", "--text", "hi", "--exaggeration", "9"], None, "exaggeration"),
        (["--model", "turbo", "--text", "hi", "--speed", "3"], None, "speed"),
        (["--model", "multilingual", "--text", "hi"], None, "needs --language"),
        (["--text", "hi", "--chunk-tokens", "10,50"], None, "add --stream or --play"),
        (["--text", "hi", "--flow-prompt-tokens", "50"], None, "add --stream or --play"),
        ([], BAD_UTF8, "standard input is not valid UTF-8"),
        (["--file", "BADFILE"], None, "bad.txt is not valid UTF-8"),
        (["--file", "/nonexistent/story.txt"], None, "cannot read --file"),
        (["--text", os.fsdecode(BAD_UTF8)], None, "--text is not valid UTF-8"),
        pytest.param(
            ["--model", "NANO", "--text", "hi", "--voice", "BADVOICE"],
            None,
            "not a voice file",
            marks=pytest.mark.slow,
        ),
        (["--model", "BROKEN", "--text", "hi"], None, "config.json"),
        (["--model", "UNSAFE", "--text", "hi"], None, "os.system"),
        pytest.param(
            ["voice", "save", "/nonexistent/clip.wav", "-o", "x.voice", "--model", "NANO"],
            None,
            "not found",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_cli_bad_input_one_line_error(tmp_path, args, stdin, message):
    (tmp_path / "bad.txt").write_bytes(BAD_UTF8)
    (tmp_path / "FILE").write_bytes(b"")
    (tmp_path / "bad.voice").write_bytes(b"RIFF....WAVEfmt ")
    if "UNSAFE" in args:
        unsafe_original(tmp_path / "unsafe-original")
    broken = tmp_path / "broken-model"
    if "BROKEN" in args:
        broken.mkdir()
        for f in os.listdir(nano()):
            os.symlink(os.path.join(nano(), f), broken / f) if f != "config.json" else None
        (broken / "config.json").write_text('{"format": "chatterbox-mlx", "networks": 5}')
    subs = {"NANO": nano(), "BADFILE": str(tmp_path / "bad.txt"), "BROKEN": str(broken),
            "BADVOICE": str(tmp_path / "bad.voice"), "FILE": str(tmp_path / "FILE"),
            "UNSAFE": str(tmp_path / "unsafe-original")}  # fmt: skip
    args = [subs.get(a, a) for a in args]
    before = set(os.listdir(tmp_path))
    r = run_cli(*args, stdin=stdin, cwd=tmp_path)
    stderr = r.stderr.decode()
    assert r.returncode == 1, stderr
    first = stderr.strip().splitlines()[0]
    assert first.startswith("chatterbox-mlx: error: ") and message in first, stderr
    assert "Traceback" not in stderr
    assert set(os.listdir(tmp_path)) == before  # no output, no temporary


@pytest.mark.pipeline
@pytest.mark.slow
@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"),
                                             (signal.SIGTERM, 143, "terminated")])  # fmt: skip
def test_cli_signals_leave_no_output(tmp_path, sig, code, word):
    out = tmp_path / "never.mp3"
    cmd = [sys.executable, "-m", "chatterbox_mlx.generate", "--model", nano(),
           "--text", "A long one. " * 40, "--max-new-tokens", "400", "--no-watermark",
           "--out", str(out)]  # fmt: skip

    # A shell's background job starts with SIGINT ignored, and Python then installs no
    # KeyboardInterrupt handler: give the child the default disposition, as a terminal does.
    def default_sigint():
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    time.sleep(12)
    assert proc.poll() is None, "finished before the signal: make the text longer"
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    assert word in stderr and "Traceback" not in stderr
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.pipeline
@pytest.mark.slow
def test_cli_long_text_progress_lines_off_a_terminal(tmp_path):
    out = tmp_path / "long.wav"
    text = "This is one sentence of the story. " * 12  # > 300 characters: two chunks
    r = run_cli("--model", nano(), "--text", text, "--max-new-tokens", "2",
                "--no-watermark", "--out", str(out))  # fmt: skip
    stderr = r.stderr.decode()
    assert r.returncode == 0, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("chunks ")]
    assert lines and lines[-1].startswith("chunks 2/2") and "left" in lines[0], stderr


@pytest.mark.pipeline
@pytest.mark.slow
def test_cli_warns_in_one_line_about_unused_options(tmp_path):
    out = tmp_path / "w.wav"
    r = run_cli("--model", nano(), "--text", "Hi.", "--max-new-tokens", "2", "--min-p", "0.1",
                "--language", "fr", "--no-watermark", "--out", str(out))  # fmt: skip
    stderr = r.stderr.decode()
    assert r.returncode == 0, stderr
    warned = [line for line in stderr.splitlines() if line.startswith("chatterbox-mlx: warning")]
    assert any("min_p" in line for line in warned), stderr
    assert any("language_id" in line for line in warned), stderr
    assert "UserWarning" not in stderr and "warnings.warn" not in stderr
