"""Output formats (chatterbox_mlx.audio.formats): every format decodes back with libsndfile to
the right duration and rate, files equal bytes, streams decode whole, errors are clear."""

from __future__ import annotations

import io
import os
import stat

from chatterbox_mlx.audio import formats as F

import numpy as np
import pytest
import soundfile

SR = 24000


def _voice_like(seconds: float = 2.5, sr: int = SR) -> np.ndarray:
    """A deterministic speech-like signal: 10 harmonics of a gliding 110-180 Hz pitch
    under a syllable-rate envelope, peak 0.6."""
    t = np.arange(int(seconds * sr)) / sr
    f0 = 110 + 70 * (0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 11))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    x = x * envelope
    return (0.6 * x / np.abs(x).max()).astype(np.float32)


@pytest.fixture(scope="module")
def wav():
    return _voice_like()


def _decode(data: bytes, fmt: str, sr: int = SR) -> tuple[np.ndarray, int]:
    if fmt == "pcm":
        return np.frombuffer(data, "<i2").astype(np.float32) / 32768, sr
    samples, rate = soundfile.read(io.BytesIO(data), dtype="float32")
    return samples, rate


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b))
    return float(np.corrcoef(a[:n], b[:n])[0, 1])


@pytest.mark.parametrize("fmt", F.FORMATS)
def test_every_format_decodes_to_duration_rate_and_signal(wav, fmt):
    data = F.encode_audio(wav, SR, format=fmt)
    decoded, rate = _decode(data, fmt)
    assert rate == SR  # 24 kHz is a rate of every codec: nothing is resampled
    # Exact length: WAV/FLAC/PCM store it; libsndfile trims MP3 by the LAME header's
    # delay and padding and Opus by its pre-skip and end granule position.
    assert len(decoded) == len(wav)
    if fmt in ("wav", "flac", "pcm"):
        # 16-bit: round(x * 32768), read back as /32768, so within half a step.
        assert np.max(np.abs(decoded - wav)) <= 0.5 / 32768 + 1e-7
    else:
        # Lossy codecs keep the waveform of this harmonic signal closely (measured
        # 0.99+); a misaligned or broken decode would correlate near 0.
        assert _correlation(decoded, wav) > 0.95
    if fmt != "pcm":
        assert soundfile.info(io.BytesIO(data)).channels == 1


def test_format_names_and_extensions():
    assert F.resolve_format("out.MP3") == "mp3"
    assert F.resolve_format("a/b.ogg") == "opus" and F.resolve_format(format="ogg") == "opus"
    assert F.resolve_format("x.raw") == "pcm"
    assert F.resolve_format("x.wav", format="flac") == "flac"  # explicit wins
    assert F.resolve_format() == "wav"
    ogg = F.encode_audio(_voice_like(0.3), SR, format="ogg")
    assert soundfile.info(io.BytesIO(ogg)).subtype == "OPUS"


@pytest.mark.parametrize("fmt", F.FORMATS)
def test_file_equals_bytes(wav, fmt, tmp_path):
    path = tmp_path / f"out.{fmt}"
    assert F.encode_audio(wav, SR, path) is None
    data = F.encode_audio(wav, SR, format=fmt)
    written = path.read_bytes()
    if fmt == "opus":
        # Each Ogg stream gets a random serial number (so the page checksums differ);
        # the encoded audio is the same.
        assert np.array_equal(_decode(written, fmt)[0], _decode(data, fmt)[0])
    else:
        assert written == data
    sink = io.BytesIO()
    assert F.encode_audio(wav, SR, sink, format=fmt) is None
    assert fmt == "opus" or sink.getvalue() == data
    assert sorted(os.listdir(tmp_path)) == [path.name]  # no temporary left behind


def test_file_has_the_usual_permissions(wav, tmp_path):
    mask = os.umask(0o022)
    try:
        F.encode_audio(wav, SR, tmp_path / "a.wav")
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "a.wav").stat().st_mode) == 0o644


def test_pcm_is_the_wav_data_and_clipped():
    x = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 1.5, -1.5, 1e-5], np.float32)
    pcm = F.encode_audio(x, SR, format="pcm")
    assert np.frombuffer(pcm, "<i2").tolist() == [0, 16384, -16384, 32767, -32768, 32767,
                                                  -32768, 0]  # fmt: skip
    assert F.encode_audio(x, SR, format="wav").endswith(pcm)


@pytest.mark.parametrize(
    "fmt, sr, expected",
    [("opus", 22050, 48000), ("opus", 44100, 48000), ("opus", 16000, 16000),
     ("mp3", 96000, 48000), ("mp3", 22050, 22050), ("flac", 22050, 22050)],
)  # fmt: skip
def test_rates_the_codec_lacks_are_resampled_to_48k(fmt, sr, expected):
    assert F.output_rate(fmt, sr) == expected
    x = _voice_like(1.0, sr)
    decoded, rate = _decode(F.encode_audio(x, sr, format=fmt), fmt, sr)
    assert rate == expected
    # soxr keeps the duration to within a sample of the new rate's length.
    assert abs(len(decoded) - len(x) * expected / sr) <= 1


def _stream(fmt: str, x: np.ndarray, sr: int = SR) -> tuple[list[bytes], bytes]:
    encoder = F.StreamEncoder(fmt, sr)
    sizes = [0, 1, 4799, 2400, 24000, 480]  # empty and one-sample chunks too
    parts, start, i = [], 0, 0
    while start < len(x):
        n = sizes[i % len(sizes)]
        parts.append(encoder.push(x[start : start + n]))
        start += n
        i += 1
    tail = encoder.finish()
    return parts, tail


@pytest.mark.parametrize("fmt", F.STREAM_FORMATS)
def test_stream_decodes_to_the_whole_audio(fmt):
    x = _voice_like(6.0)
    parts, tail = _stream(fmt, x)
    data = b"".join(parts) + tail
    decoded, rate = _decode(data, fmt)
    assert rate == SR
    if fmt == "mp3":
        # A stream has no LAME header, so the decoder keeps the encoder's delay and
        # padding and the silent frame where the header would be: 50-80 ms, < 0.1 s.
        assert 0 <= len(decoded) - len(x) < 0.1 * SR
        lag = len(decoded) - len(x)
        best = max(_correlation(decoded[k:], x) for k in range(0, lag + 1, 24))
        assert best > 0.95
    else:
        assert len(decoded) == len(x)
        if fmt == "opus":
            assert _correlation(decoded, x) > 0.95
        else:  # the same 16-bit samples as a file
            assert np.array_equal(decoded, _decode(F.encode_audio(x, SR, format=fmt), fmt)[0])
    # It streams: most of the bytes come out of push, not finish.
    assert sum(map(len, parts)) > 0.8 * len(data)


def test_wav_stream_header_is_unknown_length():
    encoder = F.StreamEncoder("wav", SR)
    header = encoder.push(np.zeros(0, np.float32))
    assert header[:4] == b"RIFF" and header[8:16] == b"WAVEfmt "
    assert header[4:8] == b"\xff\xff\xff\xff" and header[36:44] == b"data\xff\xff\xff\xff"
    assert encoder.finish() == b""


def test_opus_stream_at_another_rate_is_48k():
    x = _voice_like(2.0, 22050)
    parts, tail = _stream("opus", x, 22050)
    decoded, rate = _decode(b"".join(parts) + tail, "opus")
    assert rate == 48000
    assert abs(len(decoded) - len(x) * 48000 / 22050) <= 48  # soxr's stream: 1 ms


def test_flac_cannot_stream_and_stream_misuse():
    with pytest.raises(F.FormatError, match="flac cannot be streamed.*wav, mp3, opus, pcm"):
        F.StreamEncoder("flac", SR)
    encoder = F.StreamEncoder("pcm", SR)
    encoder.finish()
    with pytest.raises(F.FormatError, match="push after finish"):
        encoder.push(np.zeros(10, np.float32))


def test_chunked_file_writer_equals_one_shot(wav, tmp_path):
    with F.AudioFileWriter(tmp_path / "a.mp3", SR) as out:
        for start in range(0, len(wav), 7000):
            out.write(wav[start : start + 7000])
    assert (tmp_path / "a.mp3").read_bytes() == F.encode_audio(wav, SR, format="mp3")


# ---- errors -------------------------------------------------------------------------


def test_unknown_format_lists_the_supported_ones(wav, tmp_path):
    with pytest.raises(F.FormatError, match=r"unknown audio format 'aac'; supported formats: "
                       r"wav, flac, mp3, opus, pcm"):  # fmt: skip
        F.encode_audio(wav, SR, format="aac")
    with pytest.raises(F.FormatError, match=r"extension \.m4a.*supported formats"):
        F.encode_audio(wav, SR, tmp_path / "out.m4a")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("fmt", F.FORMATS)
def test_non_finite_audio_is_refused_and_nothing_written(wav, fmt, tmp_path):
    bad = wav.copy()
    bad[1234] = np.nan
    path = tmp_path / f"out.{fmt}"
    path.write_bytes(b"previous")
    with pytest.raises(F.FormatError, match="NaN or infinite samples .first at sample 1234"):
        F.encode_audio(bad, SR, path)
    assert path.read_bytes() == b"previous"  # untouched
    assert os.listdir(tmp_path) == [path.name]
    with pytest.raises(F.FormatError, match="NaN or infinite"):
        F.encode_audio(np.full(100, np.inf, np.float32), SR, format=fmt)
    if fmt in F.STREAM_FORMATS:
        encoder = F.StreamEncoder(fmt, SR)
        encoder.push(wav[:1000])
        with pytest.raises(F.FormatError, match="NaN or infinite"):
            encoder.push(bad)


def test_unwritable_destinations(wav, tmp_path):
    with pytest.raises(F.FormatError, match="does not exist"):
        F.encode_audio(wav, SR, tmp_path / "missing" / "out.wav")
    with pytest.raises(F.FormatError, match="it is a directory"):
        F.encode_audio(wav, SR, tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(F.FormatError, match="is not a folder"):
        F.encode_audio(wav, SR, tmp_path / "file" / "out.wav")
    if os.geteuid() == 0:  # root writes through permission bits; /sys refuses anyone
        target = "/sys/chatterbox-out.wav"
        match = "cannot write /sys/chatterbox-out.wav: Permission denied"
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        target, match = locked / "out.wav", "is not writable"
    with pytest.raises(F.FormatError, match=match):
        F.encode_audio(wav, SR, target)


def test_interrupted_writer_leaves_nothing(wav, tmp_path):
    path = tmp_path / "book.flac"
    with pytest.raises(KeyboardInterrupt):
        with F.AudioFileWriter(path, SR) as out:
            out.write(wav)
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


def test_bad_audio_shapes_and_rates(tmp_path):
    with pytest.raises(F.FormatError, match="expected mono audio"):
        F.encode_audio(np.zeros((2, 100), np.float32), SR)
    with pytest.raises(F.FormatError, match="empty"):
        F.encode_audio(np.zeros(0, np.float32), SR, format="mp3")
    with pytest.raises(F.FormatError, match="empty"):
        F.encode_audio(np.zeros(0, np.float32), SR, tmp_path / "a.wav")
    for rate in (0, 24000.5, "24000", None):
        with pytest.raises(F.FormatError, match="sample rate must be a positive integer"):
            F.encode_audio(np.zeros(10, np.float32), rate)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "opus", "pcm"])
def test_writer_on_a_really_full_disk_is_one_clean_error(tiny_filesystem, capfd, fmt):
    """libsndfile writes through Python callbacks: an OSError raised inside one would be
    printed by cffi as a traceback per call. The writer keeps it and raises it once."""
    from chatterbox_mlx.audio.formats import AudioFileWriter, FormatError

    chunk = np.random.default_rng(0).uniform(-0.5, 0.5, 24000).astype(np.float32)
    with pytest.raises(FormatError, match="No space left on device") as err:
        with AudioFileWriter(tiny_filesystem / f"out.{fmt}", 24000) as writer:
            for _ in range(30):  # 30 s: far more than 64 KiB in every format
                writer.write(chunk)
    assert "\n" not in str(err.value)
    assert os.listdir(tiny_filesystem) == []
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err and "cffi" not in captured.err
