"""The GPU check's steps and its ``gpu-summary.json`` (driven by ``device_check.sh``).

    python benchmarks/device_check.py --out DIR [--dry-run] [--budget-s 480] [--steps LIST]

Runs each step as a subprocess with its own timeout, inside one overall budget (a step
that the budget no longer covers is recorded as skipped, a failed one as failed; neither
stops the rest): the random-weight checkpoints (built in parallel, as the tests build them),
``compare_reference.py`` for Turbo, Nano and English, ``batching.py`` (when it exists) and
``t3.py`` for each variant. After every step it rewrites, atomically, ``raw-output.txt``
(every step's command and output) and ``gpu-summary.json`` under ``--out``, so a run cut off
at the device's time limit still leaves what it measured. ``--dry-run`` runs the same steps
on the CPU at tiny sizes. Only the standard library is imported here (the steps import
MLX), so the summary is written even where MLX or torch fails to load.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import importlib.util
import io
import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("turbo", "nano", "english")
STAGES = ("prepare_conditionals", "t3", "flow", "hift", "total")
BATCH_KEYS = ("batch", "t3_tokens_per_s", "t3_speedup", "e2e_s", "e2e_speedup", "peak_rss_mb")
T3_VARIANT = {"turbo": "turbo", "nano": "nano", "english": "cfg"}  # t3.py's names
CHECKPOINT_LAYOUTS = ("ve", "t3_cfg", "t3_turbo", "t3_nano", "s3gen", "s3gen_meanflow")


@dataclass(frozen=True)
class Sizes:
    """What each step runs: the GPU check's sizes, or the dry run's tiny ones."""

    device: str
    tokens: int
    runs: int
    warmup: int
    t3_tokens: int
    batches: str
    timeouts: dict = field(default_factory=dict)  # step name prefix -> seconds


GPU = Sizes("cuda", tokens=101, runs=3, warmup=1, t3_tokens=30, batches="1,4,16,32",
            timeouts={"checkpoints": 150, "compare": 120, "batching": 150, "t3": 75})  # fmt: skip
DRY = Sizes("cpu", tokens=4, runs=1, warmup=0, t3_tokens=2, batches="1,2",
            timeouts={"checkpoints": 120, "compare": 150, "batching": 120, "t3": 120})  # fmt: skip


def _files_module():
    """``chatterbox_mlx/files.py`` loaded by path: its atomic writers need only the standard
    library, while importing the package would load MLX."""
    spec = importlib.util.spec_from_file_location("_device_files", ROOT / "chatterbox_mlx/files.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_files = _files_module()


# ---- parsing what the benchmarks print ---------------------------------------------------


def _trailing_numbers(line: str) -> tuple[str, list[float]]:
    """A table row's label and the numbers after it (``T3 per token (ms)  9.1  4.6  1.97``)."""
    words = line.split()
    numbers: list[float] = []
    while words:
        try:
            numbers.insert(0, float(words[-1]))
        except ValueError:
            break
        words.pop()
    return " ".join(words), numbers


def parse_compare(text: str) -> dict:
    """The ratios (reference seconds / ours), seconds and T3 ms per token of the first of
    our columns (float32) in ``compare_reference.py``'s table."""
    rows = {}
    for line in text.splitlines():
        label, numbers = _trailing_numbers(line)
        if label and numbers:
            rows.setdefault(label, numbers)
    missing = [s for s in (*STAGES, "T3 per token (ms)") if len(rows.get(s, ())) < 3]
    if missing:
        raise ValueError(f"compare_reference output has no complete row for {missing}")
    return {
        "ratios": {s: rows[s][2] for s in STAGES},
        "seconds": {
            "reference": {s: rows[s][0] for s in STAGES},
            "ours": {s: rows[s][1] for s in STAGES},
        },  # fmt: skip
        "t3_ms_per_token": rows["T3 per token (ms)"][1],
    }


T3_LINE = re.compile(r"^(reference \(torch, CPU\)|mlx (\S+))\s+([0-9.]+) tokens/s")


def parse_t3(text: str) -> dict[str, float]:
    """tokens/s by label (``reference_cpu``, ``float32``, ``8-bit``, ``4-bit``) from
    ``t3.py``'s output."""
    rates = {}
    for line in text.splitlines():
        match = T3_LINE.match(line.strip())
        if match:
            rates[match.group(2) or "reference_cpu"] = float(match.group(3))
    if "float32" not in rates:
        raise ValueError("t3.py output has no 'mlx float32 ... tokens/s' line")
    return rates


def parse_batching(data) -> list[dict]:
    """The rows of ``batching.py --json``: a list of rows, or an object holding one."""
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise ValueError("batching JSON: expected a list of rows or an object with one list")
        data = lists[0]
    if not isinstance(data, list) or not data:
        raise ValueError("batching JSON: no rows")
    rows = []
    for row in data:
        missing = [k for k in BATCH_KEYS if not isinstance(row, dict) or k not in row]
        if missing:
            raise ValueError(f"batching JSON: a row lacks {missing}")
        rows.append({k: row[k] for k in BATCH_KEYS})
    return rows


# ---- the summary ---------------------------------------------------------------------------


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validate_summary(summary: dict) -> None:
    """Raise ValueError naming the first field of ``summary`` that breaks the schema."""
    for key in ("device", "date", "mlx", "torch"):
        if not isinstance(summary.get(key), str):
            raise ValueError(f"summary[{key!r}] must be a string")
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", summary["date"]):
        raise ValueError(f"summary['date'] {summary['date']!r} is not YYYY-MM-DD")
    variants = summary.get("variants")
    if not isinstance(variants, dict) or set(variants) - set(VARIANTS):
        raise ValueError(f"summary['variants'] must map some of {VARIANTS} to results")
    for name, result in variants.items():
        ratios = result.get("ratios") if isinstance(result, dict) else None
        if not isinstance(ratios, dict) or set(ratios) != set(STAGES):
            raise ValueError(f"variants[{name!r}]['ratios'] must have exactly {STAGES}")
        if not all(_number(v) and v > 0 for v in ratios.values()):
            raise ValueError(f"variants[{name!r}]['ratios'] must be positive numbers")
        if not _number(result.get("t3_ms_per_token")) or result["t3_ms_per_token"] <= 0:
            raise ValueError(f"variants[{name!r}]['t3_ms_per_token'] must be a positive number")
    batching = summary.get("batching")
    if not isinstance(batching, list):
        raise ValueError("summary['batching'] must be a list")
    for row in batching:
        if not isinstance(row, dict) or set(BATCH_KEYS) - set(row):
            raise ValueError(f"a batching row must have {BATCH_KEYS}")


def new_summary(device: str, mlx: str, torch: str, dry_run: bool) -> dict:
    return {"device": device, "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d"),
            "mlx": mlx, "torch": torch, "variants": {}, "batching": [], "dry_run": dry_run,
            "steps": [], "t3_tokens_per_s": {}}  # fmt: skip


# ---- running the steps ---------------------------------------------------------------------


@dataclass
class Step:
    name: str
    command: list[str]
    timeout_s: float
    parse: object = None  # called with (stdout text, summary) when the step succeeds


class Runner:
    """Runs steps under one deadline, keeping the log and the summary on disk."""

    def __init__(self, out: Path, summary: dict, budget_s: float, env: dict):
        self.out, self.summary, self.env = out, summary, env
        self.deadline = time.monotonic() + budget_s
        self.log = io.StringIO()

    def note(self, text: str) -> None:
        print(text, flush=True)
        self.log.write(text + "\n")

    def record(self, name: str, status: str, seconds: float, detail: str = "") -> None:
        entry = {"name": name, "status": status, "seconds": round(seconds, 1)}
        if detail:
            entry["detail"] = detail
        self.summary["steps"].append(entry)
        self.note(f"---- {name}: {status} ({seconds:.1f} s){' ' + detail if detail else ''}")
        self.save()

    def _parsed(self, step: Step, output: str) -> bool:
        """Whether a timed-out step's partial output parses (t3.py prints float32 first)."""
        try:
            step.parse(output, self.summary)
        except (ValueError, KeyError, OSError, json.JSONDecodeError):
            return False
        return True

    def save(self) -> None:
        write_text(self.out / "raw-output.txt", self.log.getvalue())
        write_json(self.out / "gpu-summary.json", self.summary)

    def run(self, step: Step) -> str | None:
        """The step's output when it exited 0 (its parser then ran), else None."""
        left = self.deadline - time.monotonic()
        if left < 5:
            self.record(step.name, "skipped", 0.0, "out of the overall budget")
            return None
        timeout = min(step.timeout_s, left)
        self.note(f"==== {step.name} (timeout {timeout:.0f} s): {' '.join(step.command)}")
        start = time.monotonic()
        rc, output = run_command(step.command, timeout, self.env)
        seconds = time.monotonic() - start
        self.log.write(output if output.endswith("\n") or not output else output + "\n")
        if rc is None:
            detail = f"timed out after {timeout:.0f} s"
            if step.parse is not None and self._parsed(step, output):
                detail += "; what it printed by then is in the summary"
            self.record(step.name, "failed", seconds, detail)
            return None
        if rc:
            self.record(step.name, "failed", seconds, f"exit status {rc}")
            return None
        if step.parse is not None:
            try:
                step.parse(output, self.summary)
            except (ValueError, KeyError, OSError, json.JSONDecodeError) as error:
                self.record(step.name, "failed", seconds, f"unreadable output: {error}")
                return None
        self.record(step.name, "ok", seconds)
        return output


def run_command(command: list[str], timeout: float, env: dict) -> tuple[int | None, str]:
    """(exit status or None on timeout, stdout+stderr). The command gets its own process
    group, which a timeout ends whole (compare_reference's two sides are its children)."""
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
        return proc.returncode, output
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        return None, output


def write_text(path: Path, text: str) -> None:
    with _files.atomic_write(path) as f:
        f.write(text.encode())


def write_json(path: Path, data) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def write_voice(path: Path, seconds: float = 12.0, sr: int = 24000) -> Path:
    """A speech-like clip (a gliding 110-190 Hz voice with formant-like harmonics, syllables
    at 4 Hz and pauses): both pipelines clone from it; espeak-ng is not on the GPU machine,
    and speed does not depend on what is said."""
    n = int(seconds * sr)
    values = []
    phase = 0.0
    for i in range(n):
        t = i / sr
        pitch = 150 + 40 * math.sin(2 * math.pi * 0.3 * t)
        phase += 2 * math.pi * pitch / sr
        pause = math.sin(2 * math.pi * 0.45 * t) < -0.7
        syllable = 0.0 if pause else max(0.0, math.sin(2 * math.pi * 4 * t))
        voice = sum(math.sin(k * phase) / k for k in (1, 2, 3, 5, 8))
        values.append(int(9000 * syllable * voice / 2.1))
    frames = b"".join(v.to_bytes(2, "little", signed=True) for v in values)
    with _files.atomic_write(path) as f, wave.open(f, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(frames)
    return path


# ---- the steps -------------------------------------------------------------------------------


def checkpoint_command(python: str) -> list[str]:
    """Build the random checkpoints in parallel (one process per file), then the three
    converted directories in parallel (each its own source and output folder)."""
    script = (
        "import sys, concurrent.futures as cf\n"
        "sys.path.insert(0, '.')\n"
        "from tests.helpers.checkpoints import cached_checkpoint\n"
        "from tests.helpers.sources import converted_dir\n"
        "with cf.ProcessPoolExecutor(6) as pool:\n"
        f"    list(pool.map(cached_checkpoint, {CHECKPOINT_LAYOUTS!r}))\n"
        "with cf.ProcessPoolExecutor(3) as pool:\n"
        f"    for path in pool.map(converted_dir, {VARIANTS!r}): print(path)\n"
    )
    return [python, "-c", script]


def compare_parser(variant: str):
    def parse(text: str, summary: dict) -> None:
        summary["variants"][variant] = parse_compare(text)

    return parse


def t3_parser(variant: str):
    def parse(text: str, summary: dict) -> None:
        summary["t3_tokens_per_s"][variant] = parse_t3(text)

    return parse


def batching_parser(path: Path):
    def parse(_text: str, summary: dict) -> None:
        summary["batching"] = parse_batching(json.loads(path.read_text()))

    return parse


BATCHING = ROOT / "benchmarks" / "batching.py"


def batching_step(python: str, sizes: Sizes, out: Path, help_text: str, model: str) -> Step:
    """The batching benchmark's step; ``help_text`` (its ``--help``) says which of the
    optional flags it takes."""
    json_path = out / "batching.json"
    command = [python, str(BATCHING), "--batch", sizes.batches, "--json", str(json_path),
               "--variant", "turbo", "--model", model]  # fmt: skip
    # one round and no long-text case: each measurement loads the model in a child process
    for flag, value in (("--rounds", "1"), ("--no-long", None)):
        if flag in help_text:
            command += [flag] if value is None else [flag, value]
    if sizes.device == "cpu" and "--tokens" in help_text:
        command += ["--tokens", str(sizes.tokens)]
    return Step("batching", command, sizes.timeouts["batching"], batching_parser(json_path))


def converted_path(python: str, variant: str, env: dict) -> str:
    code = ("import sys; sys.path.insert(0, '.'); from tests.helpers.sources import "
            f"converted_dir; print(converted_dir({variant!r}))")  # fmt: skip
    rc, output = run_command([python, "-c", code], 120, env)
    return output.strip().splitlines()[-1] if rc == 0 and output.strip() else ""


def environment(python: str, reference_python: str, env: dict, dry_run: bool) -> dict:
    """mlx's and torch's versions and the device's name, each 'unknown (why)' on failure."""
    found = {}
    probes = {
        "mlx": (python, "import mlx.core as mx; print(mx.__version__)"),
        "torch": (reference_python, "import torch; print(torch.__version__)"),
    }
    if not dry_run:
        probes["device"] = (reference_python, "import torch; print(torch.cuda.get_device_name())")
        probes["mlx_gpu"] = (python, "import mlx.core as mx; print(mx.is_available(mx.gpu))")
    for key, (exe, code) in probes.items():
        rc, output = run_command([exe, "-c", code], 60, env)
        lines = output.strip().splitlines()
        found[key] = lines[-1] if rc == 0 and lines else f"unknown ({_last(lines)})"
    if dry_run:
        found["device"] = f"cpu: {platform.machine()}, {os.cpu_count()} cores (dry run)"
    return found


def _last(lines: list[str]) -> str:
    return lines[-1][:200] if lines else "no output"


def build_steps(python: str, reference_python: str, sizes: Sizes, voice: Path) -> list[Step]:
    steps = [Step("checkpoints", checkpoint_command(python), sizes.timeouts["checkpoints"])]
    for variant in VARIANTS:
        command = [python, "benchmarks/compare_reference.py", "--variant", variant,
                   "--device", sizes.device, "--tokens", str(sizes.tokens),
                   "--runs", str(sizes.runs), "--warmup", str(sizes.warmup),
                   "--voice", str(voice), "--reference-python", reference_python,
                   "--dummy-watermarker"]  # fmt: skip
        steps.append(Step(f"compare-{variant}", command, sizes.timeouts["compare"],
                          compare_parser(variant)))  # fmt: skip
    return steps


def t3_steps(python: str, sizes: Sizes) -> list[Step]:
    steps = []
    for variant in VARIANTS:
        command = [python, "benchmarks/t3.py", "--variant", T3_VARIANT[variant]]
        command += ["--tokens", str(sizes.t3_tokens)]
        steps.append(Step(f"t3-{variant}", command, sizes.timeouts["t3"], t3_parser(variant)))
    return steps


STEP_NAMES = ("checkpoints", *(f"compare-{v}" for v in VARIANTS), "batching",
              *(f"t3-{v}" for v in VARIANTS))  # fmt: skip
# The dry run proves each kind of step first (a loaded CPU may not finish them all).
DRY_ORDER = ("checkpoints", "compare-turbo", "batching", "t3-turbo", "compare-nano",
             "compare-english", "t3-nano", "t3-english")  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the raw output "
                        "and gpu-summary.json (the device's $OUT)")  # fmt: skip
    parser.add_argument("--dry-run", action="store_true", help="the same steps on the CPU, tiny")
    parser.add_argument(
        "--budget-s", type=float, help="seconds for all steps (default 470, dry run 420)"
    )
    parser.add_argument(
        "--timeout-scale",
        type=float,
        default=1.0,
        help="multiply every step's timeout (a loaded or slower machine)",
    )
    parser.add_argument("--steps", help=f"comma list, a subset of {','.join(STEP_NAMES)}")
    parser.add_argument("--reference-python", default=str(ROOT / ".refenv" / "bin" / "python"),
                        help="python with chatterbox-tts and torch (default .refenv)")  # fmt: skip
    parser.add_argument("--setup-log", type=Path, help="the install's log, copied into the raw "
                        "output; --setup-status gives its result")  # fmt: skip
    parser.add_argument("--setup-status", default="", help="'ok' or why the install failed")
    args = parser.parse_args(argv)
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out}: a file is there; give a folder")
    if args.budget_s is None:
        args.budget_s = 420.0 if args.dry_run else 470.0
    if not args.budget_s > 0:
        parser.error(f"--budget-s {args.budget_s}: give a positive number of seconds")
    if not args.timeout_scale > 0:
        parser.error(f"--timeout-scale {args.timeout_scale}: give a positive factor")
    if args.steps is None:
        args.steps = list(STEP_NAMES)
    else:
        args.steps = [s for s in args.steps.split(",") if s]
        unknown = [s for s in args.steps if s not in STEP_NAMES]
        if unknown or not args.steps:
            parser.error(f"--steps: unknown {unknown or 'empty list'}; choose from "
                         f"{','.join(STEP_NAMES)}")  # fmt: skip
    return args


def main(argv: list[str] | None = None) -> dict:
    started = time.monotonic()
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    sizes = DRY if args.dry_run else GPU
    scaled = {k: v * args.timeout_scale for k, v in sizes.timeouts.items()}
    sizes = dataclasses.replace(sizes, timeouts=scaled)
    python = sys.executable
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=os.pathsep.join(paths))
    found = environment(python, args.reference_python, env, args.dry_run)
    summary = new_summary(found["device"], found["mlx"], found["torch"], args.dry_run)
    runner = Runner(args.out, summary, args.budget_s - (time.monotonic() - started), env)
    runner.note(f"device check ({'dry run, CPU' if args.dry_run else 'GPU'}): {found}")
    if args.setup_log is not None:
        setup = args.setup_log.read_text(errors="replace") if args.setup_log.exists() else ""
        runner.note(f"==== setup: {args.setup_status or 'not run'}\n{setup[-6000:]}")
        runner.record("setup", "ok" if args.setup_status == "ok" else "failed", 0.0,
                      "" if args.setup_status == "ok" else args.setup_status)  # fmt: skip
    if not args.dry_run and found.get("mlx_gpu") != "True":
        runner.note(f"MLX sees no GPU here ({found.get('mlx_gpu')}): the compare steps will fail")
    voice = write_voice(Path(tempfile.mkdtemp(prefix="device-check-")) / "voice.wav")
    steps = {s.name: s for s in build_steps(python, args.reference_python, sizes, voice)}
    steps.update({s.name: s for s in t3_steps(python, sizes)})
    for name in DRY_ORDER if args.dry_run else STEP_NAMES:
        if name not in args.steps:
            continue
        if name == "batching":
            if not BATCHING.exists():
                runner.record(
                    name, "skipped", 0.0, "benchmarks/batching.py is not in this checkout"
                )
                continue
            help_text = run_command([python, str(BATCHING), "--help"], 60, env)[1]
            model = converted_path(python, "turbo", env)
            step = batching_step(python, sizes, args.out, help_text, model)
        else:
            step = steps[name]
        runner.run(step)
    try:
        validate_summary(summary)
    except ValueError as error:
        summary["schema_error"] = str(error)
        runner.note(f"summary does not meet its schema: {error}")
    runner.save()
    runner.note(f"wrote {args.out / 'gpu-summary.json'} and {args.out / 'raw-output.txt'}")
    return summary


if __name__ == "__main__":
    main()
