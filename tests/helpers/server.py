"""Servers for the server tests and benchmarks: a Nano random-weight model with a short
built-in voice (cheap requests), uvicorn on 127.0.0.1 on a free port in a thread (real
HTTP) or the real command line in a subprocess, and speech-like clips to upload."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

# The built-in voice cut to this many T3 prompt tokens and S3Gen prompt tokens: the
# flow's attention and T3's prefill cover the prompt, so a request costs a fraction of
# the full 375 / 250-token voice's.
SHORT_T3_PROMPT = 25
SHORT_GEN_PROMPT = 16
ROOT = Path(__file__).resolve().parents[2]


def short_voice_dir(variant: str = "nano") -> Path:
    """A converted ``variant`` directory (the test cache's, linked) whose built-in voice
    is cut short."""
    from chatterbox_mlx.checkpoints.layout import CONDS_FILE
    from chatterbox_mlx.voice.conditionals import Conditionals

    import mlx.core as mx

    from tests.helpers.checkpoints import cache_dir
    from tests.helpers.sources import converted_dir

    source = converted_dir(variant)
    out = cache_dir() / f"{source.name}-short-voice-{SHORT_T3_PROMPT}-{SHORT_GEN_PROMPT}"
    if (out / CONDS_FILE).is_file():
        return out
    tmp = out.with_name(f".{out.name}.{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.name != CONDS_FILE and not (tmp / item.name).exists():
            os.symlink(item, tmp / item.name)
    conds = Conditionals.load(source / CONDS_FILE)
    t3, gen, n = conds.t3, conds.gen, SHORT_GEN_PROMPT
    short = replace(
        conds,
        t3=replace(t3, cond_prompt_speech_tokens=t3.cond_prompt_speech_tokens[:, :SHORT_T3_PROMPT]),
        gen=replace(
            gen,
            prompt_token=gen.prompt_token[:, :n],
            prompt_token_len=mx.array([n], dtype=mx.int32),
            prompt_feat=gen.prompt_feat[:, : 2 * n],
        ),
    )
    short.save(tmp / CONDS_FILE)
    try:
        os.rename(tmp, out)
    except OSError:  # another process made it first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return out


def speech_like(seconds: float, sr: int = 24000, seed: int = 0) -> np.ndarray:
    """A deterministic voiced signal: harmonics of a gliding pitch under a syllable-rate
    envelope, a little noise; peak 0.5."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 120 + 50 * np.sin(2 * np.pi * 0.6 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 12))
    x = x * (0.4 + 0.6 * np.sin(2 * np.pi * 3.5 * t) ** 2) + 0.02 * rng.standard_normal(t.size)
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


def write_clip(path: Path, seconds: float, sr: int = 24000, seed: int = 0) -> Path:
    import soundfile

    soundfile.write(str(path), speech_like(seconds, sr, seed), sr)
    return Path(path)


class ThreadServer:
    """The server's uvicorn (``serving.make_server``: its connection rules and shutdown)
    serving ``app`` on 127.0.0.1 (a free port) in a thread::

    with ThreadServer(app) as server:
        httpx.get(server.url + "/health")
    """

    def __init__(self, app):
        from chatterbox_mlx.server.serving import make_server

        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = make_server(app, log_level="warning")
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()


class CliServer:
    """``python -m chatterbox_mlx.server --port 0 ARGS`` in a subprocess; ``url`` once it
    says where it listens; standard error collected in ``log``. ``files``: the process's
    limit on open files (soft and hard, as ``ulimit -n`` sets them)."""

    def __init__(
        self, *args: str, env: dict | None = None, timeout: float = 300, files: int | None = None
    ):
        cmd = [sys.executable, "-m", "chatterbox_mlx.server", "--port", "0", *args]

        def limit_files() -> None:
            import resource

            resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))

        self.proc = subprocess.Popen(
            cmd,
            preexec_fn=limit_files if files is not None else None,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), **(env or {})},
        )
        self.log: list[str] = []
        self.url: str | None = None
        ready = threading.Event()

        def read() -> None:
            for line in self.proc.stderr:
                self.log.append(line)
                found = re.search(r"on (http://\S+?:\d+)", line)
                if found and self.url is None:
                    self.url = found.group(1)
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(timeout) or self.url is None:
            self.stop()
            raise RuntimeError("the server did not start:\n" + "".join(self.log))
        wait_healthy(self.url)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def log_text(self) -> str:
        return "".join(self.log)

    def stop(self, sig=None) -> int:
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(sig or signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> CliServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_healthy(url: str, timeout: float = 60) -> dict:
    import json
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as r:
                return json.loads(r.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def rss_kib(pid: int) -> int:
    """Resident memory of a process in KiB (``ps``, on Linux and macOS)."""
    out = subprocess.run(["ps", "-o", "rss=", "-p", str(pid)], capture_output=True, text=True)
    return int(out.stdout.strip())
