"""The prepared GPU check (benchmarks/device_check.*): its parsers on real saved outputs,
the summary's schema and writing, the steps' failure handling, the argument errors, and the
wheel slimming that lets mlx-cuda travel. Never the whole check (that is its dry run)."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import struct
import subprocess
import sys
import wave
import zipfile
from pathlib import Path

import pytest

from benchmarks import device_check as dc
from benchmarks import device_slim_wheel as slim

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SAMPLES = ROOT / "benchmarks" / "device_samples"


# ---- parsing what the benchmarks print -------------------------------------------------------


def test_compare_parser_reads_the_saved_h200_turbo_table_float32_column():
    parsed = dc.parse_compare((RESULTS / "cuda-h200-turbo.txt").read_text())
    # that table also has an 8-bit column; the summary takes the float32 one
    assert parsed["ratios"] == {"prepare_conditionals": 0.71, "t3": 1.97, "flow": 1.13,
                                "hift": 0.36, "total": 1.56}  # fmt: skip
    assert parsed["t3_ms_per_token"] == 4.6
    assert parsed["seconds"]["reference"]["total"] == 1.12
    assert parsed["seconds"]["ours"]["t3"] == 0.47


@pytest.mark.parametrize(
    "name, total, t3_ms",
    [("cuda-h200-nano.txt", 1.77, 3.3), ("cuda-h200-english.txt", 1.65, 11.2),
     ("cpu-epyc-2core-turbo.txt", 1.00, 90.4)],
)  # fmt: skip
def test_compare_parser_reads_every_saved_table(name, total, t3_ms):
    parsed = dc.parse_compare((RESULTS / name).read_text())
    assert parsed["ratios"]["total"] == total
    assert parsed["t3_ms_per_token"] == t3_ms


def test_compare_parser_reads_a_fresh_cpu_run_among_its_log_lines():
    """The dry run's own compare output (with the token-count and audio rows that later
    versions print), as it sits in raw-output.txt between stderr lines."""
    text = (SAMPLES / "compare-cpu-turbo.txt").read_text()
    parsed = dc.parse_compare("Some warning at line 12\n" + text + "\nnoise 1 2\n")
    assert set(parsed["ratios"]) == set(dc.STAGES)
    assert all(v > 0 for v in parsed["ratios"].values())
    row = next(line for line in text.splitlines() if line.startswith("T3 per token"))
    assert parsed["t3_ms_per_token"] == float(row.split()[5])


def test_compare_parser_names_the_missing_rows():
    text = (RESULTS / "cuda-h200-nano.txt").read_text()
    cut = "\n".join(line for line in text.splitlines() if not line.startswith(("flow", "hift")))
    with pytest.raises(ValueError, match=r"\['flow', 'hift'\]"):
        dc.parse_compare(cut)


def test_t3_parser_reads_a_fresh_cpu_run():
    """The float32 part of a fresh CPU run (its 8-bit and 4-bit runs, 15x slower on the
    CPU, were cut off), then the quantized lines as t3.py formats them."""
    text = (SAMPLES / "t3-cpu-turbo.txt").read_text()
    assert dc.parse_t3(text) == {"reference_cpu": 0.05, "float32": 0.13}
    quantized = "".join(  # t3.py's line format
        f"mlx {label:8s}           {rate:7.2f} tokens/s  ratio {2.0:5.2f}x  logits drift\n"
        for label, rate in (("8-bit", 4.56), ("4-bit", 3.21))
    )
    rates = dc.parse_t3(text + quantized)
    assert (rates["8-bit"], rates["4-bit"]) == (4.56, 3.21)
    with pytest.raises(ValueError, match="mlx float32"):
        dc.parse_t3("reference (torch, CPU)     10.00 tokens/s\n")


def _row(batch):
    return {"batch": batch, "t3_tokens_per_s": 10.0 * batch, "t3_speedup": 1.0 * batch,
            "e2e_s": 2.0, "e2e_speedup": 1.5, "peak_rss_mb": 900.0, "extra": 1}  # fmt: skip


def test_batching_rows_as_a_list_or_inside_an_object_keep_the_summary_keys():
    rows = dc.parse_batching([_row(1), _row(4)])
    assert [r["batch"] for r in rows] == [1, 4] and all(set(r) == set(dc.BATCH_KEYS) for r in rows)
    assert dc.parse_batching({"rows": [_row(2)], "variant": "turbo"})[0]["batch"] == 2
    broken = _row(1)
    del broken["e2e_s"]
    with pytest.raises(ValueError, match="e2e_s"):
        dc.parse_batching([broken])
    with pytest.raises(ValueError, match="no rows"):
        dc.parse_batching([])


# ---- the summary -----------------------------------------------------------------------------


def _summary():
    summary = dc.new_summary("NVIDIA H200", "0.32.4", "2.11.0+cu130", dry_run=False)
    summary["variants"]["turbo"] = dc.parse_compare((RESULTS / "cuda-h200-turbo.txt").read_text())
    summary["batching"] = dc.parse_batching([_row(1)])
    return summary


def test_a_summary_from_saved_outputs_meets_the_schema():
    summary = _summary()
    dc.validate_summary(summary)
    assert json.loads(json.dumps(summary)) == summary


@pytest.mark.parametrize(
    "edit, message",
    [(lambda s: s.update(date="6/12/2026"), "YYYY-MM-DD"),
     (lambda s: s.update(mlx=None), "'mlx'"),
     (lambda s: s["variants"].update(multilingual=s["variants"]["turbo"]), "variants"),
     (lambda s: s["variants"]["turbo"]["ratios"].pop("hift"), "exactly"),
     (lambda s: s["variants"]["turbo"]["ratios"].update(t3=float("nan")), "positive"),
     (lambda s: s["variants"]["turbo"].update(t3_ms_per_token=0), "t3_ms_per_token"),
     (lambda s: s["batching"][0].pop("peak_rss_mb"), "batching row")],
)  # fmt: skip
def test_the_schema_check_names_what_is_wrong(edit, message):
    summary = _summary()
    edit(summary)
    with pytest.raises(ValueError, match=message):
        dc.validate_summary(summary)


def _runner(tmp_path, budget_s=60.0):
    summary = dc.new_summary("cpu", "0.32.4", "2.13.0", dry_run=True)
    env = dict(__import__("os").environ, PYTHONPATH=str(ROOT))
    return dc.Runner(tmp_path, summary, budget_s, env), summary


def test_steps_write_the_summary_and_raw_output_and_a_failure_is_not_fatal(tmp_path):
    runner, summary = _runner(tmp_path)
    sample = RESULTS / "cuda-h200-english.txt"
    show = [sys.executable, "-c", f"print(open({str(sample)!r}).read())"]
    runner.run(dc.Step("fails", [sys.executable, "-c", "import sys; sys.exit(3)"], 30))
    runner.run(dc.Step("compare-english", show, 30, dc.compare_parser("english")))
    runner.run(dc.Step("garbled", [sys.executable, "-c", "print('no table')"], 30,
                       dc.compare_parser("nano")))  # fmt: skip
    written = json.loads((tmp_path / "gpu-summary.json").read_text())
    assert [(s["name"], s["status"]) for s in written["steps"]] == [
        ("fails", "failed"), ("compare-english", "ok"), ("garbled", "failed")]  # fmt: skip
    assert written["steps"][0]["detail"] == "exit status 3"
    assert "no complete row" in written["steps"][2]["detail"]
    assert written["variants"]["english"]["ratios"]["hift"] == 1.78
    assert set(written["variants"]) == {"english"}
    dc.validate_summary(written)
    raw = (tmp_path / "raw-output.txt").read_text()
    assert "==== compare-english" in raw and "prepare_conditionals" in raw
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_a_step_past_its_timeout_is_ended_with_its_children(tmp_path):
    runner, summary = _runner(tmp_path)
    pid_file = tmp_path / "child.pid"
    code = ("import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', "
            "'import time; time.sleep(60)']); open(sys.argv[1], 'w').write(str(p.pid)); "
            "time.sleep(60)")  # fmt: skip
    runner.run(dc.Step("slow", [sys.executable, "-c", code, str(pid_file)], 2))
    assert summary["steps"][0]["status"] == "failed"
    assert "timed out" in summary["steps"][0]["detail"]
    child = int(pid_file.read_text())
    stat = Path(f"/proc/{child}/stat")
    assert not stat.exists() or stat.read_text().split()[2] == "Z"


def test_a_timed_out_step_keeps_what_it_printed_before(tmp_path):
    runner, summary = _runner(tmp_path)
    sample = SAMPLES / "t3-cpu-turbo.txt"
    code = f"print(open({str(sample)!r}).read(), flush=True); import time; time.sleep(60)"
    runner.run(dc.Step("t3-turbo", [sys.executable, "-c", code], 3, dc.t3_parser("turbo")))
    assert summary["t3_tokens_per_s"]["turbo"]["float32"] == 0.13
    assert summary["steps"][0]["status"] == "failed"
    assert "in the summary" in summary["steps"][0]["detail"]


def test_steps_past_the_overall_budget_are_skipped(tmp_path):
    runner, summary = _runner(tmp_path, budget_s=1.0)
    runner.run(dc.Step("late", [sys.executable, "-c", "print(1)"], 30))
    assert summary["steps"] == [{"name": "late", "status": "skipped", "seconds": 0.0,
                                 "detail": "out of the overall budget"}]  # fmt: skip


def test_the_batching_step_takes_the_optional_flags_its_help_lists(tmp_path):
    help_text = "usage: batching.py [--batch B] [--tokens N] [--rounds R] [--no-long]"
    dry = dc.batching_step("py", dc.DRY, tmp_path, help_text, "/m").command
    assert dry[dry.index("--batch") + 1] == "1,2" and dry[dry.index("--model") + 1] == "/m"
    assert dry[dry.index("--rounds") + 1] == "1" and "--no-long" in dry
    assert dry[dry.index("--tokens") + 1] == str(dc.DRY.tokens)
    gpu = dc.batching_step("py", dc.GPU, tmp_path, "usage: batching.py [--batch B]", "/m")
    assert gpu.command[gpu.command.index("--batch") + 1] == "1,4,16,32"
    assert not {"--rounds", "--no-long", "--tokens"} & set(gpu.command)
    assert gpu.command[gpu.command.index("--json") + 1] == str(tmp_path / "batching.json")


def test_the_voice_is_a_12_second_24_khz_wav_with_sound(tmp_path):
    path = dc.write_voice(tmp_path / "voice.wav")
    with wave.open(str(path)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getnframes()) == (24000, 1, 288000)
        frames = w.readframes(w.getnframes())
    samples = struct.unpack(f"<{len(frames) // 2}h", frames)
    assert max(samples) > 3000 and min(samples) < -3000


def test_the_step_list_covers_every_variant_at_the_gpu_sizes(tmp_path):
    steps = dc.build_steps("py", "ref", dc.GPU, tmp_path / "v.wav") + dc.t3_steps("py", dc.GPU)
    assert [s.name for s in steps] == [n for n in dc.STEP_NAMES if n != "batching"]
    english = next(s for s in steps if s.name == "compare-english").command
    assert english[english.index("--device") + 1] == "cuda"
    assert english[english.index("--tokens") + 1] == "101"
    assert next(s for s in steps if s.name == "t3-english").command[3] == "cfg"


# ---- arguments ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [(["--steps", "compare-turbo,warp"], "unknown \\['warp'\\]"),
     (["--budget-s", "0"], "positive"),
     (["--timeout-scale", "-1"], "positive factor"),
     ([], "--out")],
)  # fmt: skip
def test_the_driver_refuses_bad_arguments(tmp_path, capsys, argv, message):
    argv = argv if argv == [] else ["--out", str(tmp_path), *argv]
    with pytest.raises(SystemExit):
        dc.parse_args(argv)
    assert __import__("re").search(message, capsys.readouterr().err)


def test_the_driver_refuses_a_file_as_its_output_folder(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit):
        dc.parse_args(["--out", str(tmp_path / "file")])
    assert "give a folder" in capsys.readouterr().err


def test_the_driver_takes_a_subset_of_steps_and_dry_run_defaults(tmp_path):
    args = dc.parse_args(["--out", str(tmp_path), "--dry-run", "--steps", "t3-nano,checkpoints"])
    assert args.steps == ["t3-nano", "checkpoints"] and args.budget_s == 420.0
    assert sorted(dc.DRY_ORDER) == sorted(dc.STEP_NAMES)


def _shell(*argv, env=None):
    return subprocess.run(["bash", str(ROOT / "benchmarks" / "device_check.sh"), *argv],
                          capture_output=True, text=True, env=env, timeout=60)  # fmt: skip


@pytest.mark.parametrize(
    "argv, message",
    [(["--bogus"], "unknown argument '--bogus'"),
     (["--out"], "--out needs a folder"),
     (["--dry-run", "--out", "/tmp/x", "--budget-s", "soon"], "whole number of seconds")],
)  # fmt: skip
def test_the_shell_entry_refuses_bad_arguments(argv, message):
    done = _shell(*argv)
    assert done.returncode == 2 and message in done.stderr


def test_the_shell_entry_needs_an_output_folder_and_a_gpu_machine(tmp_path):
    env = {k: v for k, v in __import__("os").environ.items() if k != "OUT"}
    done = _shell(env=env)
    assert done.returncode == 2 and "set OUT or pass --out DIR" in done.stderr
    if shutil.which("nvidia-smi") is None:
        done = _shell("--out", str(tmp_path), env=env)
        assert done.returncode == 2 and "not the GPU machine; use --dry-run" in done.stderr


def test_the_wheel_script_refuses_a_bad_python_version():
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "device_wheels.sh"), "python3.12"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and "not a python version list" in done.stderr


# ---- slimming mlx-cuda's wheel ---------------------------------------------------------------


def _entry(kind: int, sm: int, payload: bytes) -> bytes:
    header_size = 64
    head = struct.pack("<HHIIIIIII", kind, 0x101, header_size, len(payload), 0, len(payload),
                       0, 0, sm)  # fmt: skip
    return head + bytes(header_size - len(head)) + payload


def _fatbin(*entries: bytes) -> bytes:
    body = b"".join(entries)
    return struct.pack("<IHHQ", slim.FATBIN_MAGIC, 1, 16, len(body)) + body


def _elf(section: bytes) -> bytes:
    """A minimal ELF64 file holding ``section`` as .nv_fatbin."""
    names = b"\0.nv_fatbin\0.shstrtab\0"
    data_offset = 64
    names_offset = data_offset + len(section)
    shoff = names_offset + len(names)
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", header, 0x28, shoff)
    struct.pack_into("<HHH", header, 0x3A, 64, 3, 2)
    fatbin = slim.ELF_SECTION.pack(1, 1, 2, 0, data_offset, len(section), 0, 0, 8, 0)
    strings = slim.ELF_SECTION.pack(12, 3, 0, 0, names_offset, len(names), 0, 0, 1, 0)
    sections = [bytes(64), fatbin, strings]
    return bytes(header) + section + names + b"".join(sections)


def test_keeping_sm_90_leaves_each_fat_binary_its_sm_90_image_unchanged():
    sm90_a, sm90_b = b"A" * 40, b"B" * 24
    section = bytearray(
        _fatbin(_entry(1, 120, b"p" * 16), _entry(2, 75, b"x" * 32), _entry(2, 90, sm90_a))
        + _fatbin(_entry(2, 90, sm90_b), _entry(2, 100, b"y" * 48))
    )
    starts = slim.fatbin_starts(section)
    counts = slim.keep_architectures(section, {90})
    assert counts["fatbins"] == 2 and counts["kept"] == 2 and counts["dropped"] == 3
    assert slim.fatbin_starts(section)[:2] == starts  # the library's pointers stay valid
    for start, payload in zip(starts, (sm90_a, sm90_b), strict=True):
        ((offset, length, kind, sm),) = slim.fatbin_entries(section, start)
        assert (kind, sm) == (2, 90) and section[offset + 64 : offset + length] == payload
        end = offset + length
    assert set(section[end:]) == {0}


def test_keeping_an_architecture_a_fat_binary_lacks_is_refused():
    section = bytearray(_fatbin(_entry(2, 75, b"x" * 8)))
    with pytest.raises(ValueError, match=r"no image for sm \[90\].*\[75\]"):
        slim.keep_architectures(section, {90})


def _record_hash(payload: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(payload).digest())
    return "sha256=" + digest.rstrip(b"=").decode()


def test_a_slimmed_wheel_has_lzma_members_true_record_hashes_and_no_dropped_files(tmp_path):
    library = _elf(_fatbin(_entry(2, 80, b"x" * 16), _entry(2, 90, b"A" * 16)))
    wheel = tmp_path / "mlx_cuda_13-0.0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("mlx/lib/libmlx.so", library)
        z.writestr("mlx/include/a.h", "int a;\n")
        z.writestr("weights/big.bin", b"w" * 1000)
        z.writestr("mlx_cuda_13-0.0.1.dist-info/METADATA", "Name: mlx-cuda-13\n")
        z.writestr("mlx_cuda_13-0.0.1.dist-info/RECORD", "stale\n")
    report = slim.slim_wheel(wheel, tmp_path / "out", {90}, strip=False, drop=("weights/",))
    assert report["dropped_files"] == 1
    assert report["libraries"]["mlx/lib/libmlx.so"]["kept"] == 1
    with zipfile.ZipFile(tmp_path / "out" / wheel.name) as z:
        assert "weights/big.bin" not in z.namelist()
        assert all(i.compress_type == zipfile.ZIP_LZMA for i in z.infolist())
        record = dict(line.split(",", 1) for line in z.read(
            "mlx_cuda_13-0.0.1.dist-info/RECORD").decode().splitlines())  # fmt: skip
        for name in ("mlx/lib/libmlx.so", "mlx/include/a.h"):
            payload = z.read(name)
            assert record[name] == f"{_record_hash(payload)},{len(payload)}"
        offset, size = slim.elf_section(z.read("mlx/lib/libmlx.so"), ".nv_fatbin")
        section = z.read("mlx/lib/libmlx.so")[offset : offset + size]
    assert [e[3] for e in slim.fatbin_entries(section, 0)] == [90]
