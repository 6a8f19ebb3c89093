"""The speech server under load: N concurrent clients until R requests were answered with
audio, on the Nano random-weight model (the tests' checkpoint, built-in voice cut short so
each request is small), through the real command line (``python -m chatterbox_mlx.server``)
in a child process.

    python benchmarks/server_load.py --clients 8 --requests 100

Reports: every request answered with its audio or a 429 (with Retry-After), none lost
(no connection error, no other status, no short body), the latency of the answered ones,
and the server process's resident memory (``ps``) after every 10 answered requests: flat
once warm (the growth from the 20th to the last answered request is printed).
Clients that get a 429 wait ``--backoff`` seconds and send again.

    python benchmarks/server_load.py --batching --variant turbo --max-batch 8

The continuous-batching case: 8 requests mixing short and long texts (``--short`` and
``--long`` speech tokens, alternating) sent by 8 concurrent clients to a server with
``--max-batch N``, then the same 8 requests sent one at a time, then the 8 concurrent
clients again against ``--max-batch 1`` (one request at a time, the rest queued), all on
one server process each, in that order. Prints the wall time of each, the ratio of one
at a time to batched, and the p50/p95 time to first audio byte per case (fairness: with
batching a short request starts at once beside a long one instead of queueing).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import chatterbox_mlx  # noqa: E402, F401, I001  (BLAS before mlx.core)

from tests.helpers.server import CliServer, rss_kib, short_voice_dir  # noqa: E402

PER_TOKEN = 960
TAIL = 3  # Nano's silence tokens


def speak(url: str, body: dict) -> tuple[int, int, str | None]:
    request = urllib.request.Request(
        url + "/v1/audio/speech",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            return response.status, len(response.read()), None
    except urllib.error.HTTPError as err:
        err.read()
        return err.code, 0, err.headers.get("Retry-After")


def first_audio(url: str, body: dict) -> tuple[float, float, int]:
    """Seconds to the first audio byte and to the end, and the bytes, of one streamed
    request (HTTP errors raise)."""
    request = urllib.request.Request(
        url + "/v1/audio/speech",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=1200) as response:
        size = len(response.read(1))
        first = time.perf_counter() - started
        while chunk := response.read(65536):
            size += len(chunk)
    return first, time.perf_counter() - started, size


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def batching_case(args) -> int:
    """See the module docstring (``--batching``)."""
    import tempfile

    texts = (
        "Hello there.",
        "This one is a longer request, a sentence or two of narration that goes on a while.",
    )
    bodies = [
        {
            "input": texts[i % 2],
            "voice": "alloy",
            "response_format": "pcm",
            "seed": 10 + i,
            "max_new_tokens": args.long if i % 2 else args.short,
        }
        for i in range(args.clients)
    ]
    expected = [2 * (b["max_new_tokens"] + TAIL) * PER_TOKEN for b in bodies]
    model = short_voice_dir(args.variant)

    def serve(max_batch: int, voices: str) -> CliServer:
        return CliServer("--model", str(model), "--no-watermark", "--max-new-tokens",
                         str(max(args.short, args.long)), "--max-queue", str(args.clients),
                         "--max-batch", str(max_batch), "--voices", voices,
                         "--log-level", "warning")  # fmt: skip

    def concurrent(url: str) -> tuple[float, list]:
        results: list = [None] * len(bodies)

        def one(i: int) -> None:
            results[i] = first_audio(url, bodies[i])

        started = time.perf_counter()
        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(bodies))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.perf_counter() - started, results

    rows = []
    with tempfile.TemporaryDirectory() as voices:
        with serve(args.max_batch, voices) as server:
            first_audio(server.url, {**bodies[0], "max_new_tokens": 2})  # warm-up
            wall, results = concurrent(server.url)
            rows.append((f"{args.clients} clients, --max-batch {args.max_batch}", wall, results))
            started, results = time.perf_counter(), []
            for body in bodies:
                results.append(first_audio(server.url, body))
            rows.append(("one at a time", time.perf_counter() - started, results))
        with serve(1, voices) as server:
            first_audio(server.url, {**bodies[0], "max_new_tokens": 2})
            wall, results = concurrent(server.url)
            rows.append((f"{args.clients} clients, --max-batch 1", wall, results))
    print(f"machine: {platform.machine()} {platform.system()}, python {platform.python_version()}")
    print(f"model {model.name}; {args.clients} requests, short {args.short} / long "
          f"{args.long} speech tokens alternating, pcm, streamed")  # fmt: skip
    lost = 0
    for name, wall, results in rows:
        short_bodies = [
            (b["max_new_tokens"], b["seed"], r[2], n)
            for r, n, b in zip(results, expected, bodies, strict=True)
            if r[2] != n
        ]
        lost += len(short_bodies)
        for tokens, seed, got, want in short_bodies:
            print(f"  {name}: request of {tokens} tokens (seed {seed}): {got} bytes, not {want}")
        firsts = [r[0] for r in results]
        short = [
            r[0] for r, b in zip(results, bodies, strict=True) if b["max_new_tokens"] == args.short
        ]
        print(f"{name:32s} wall {wall:7.1f} s   first audio p50 {quantile(firsts, 0.5):6.2f} s  "
              f"p95 {quantile(firsts, 0.95):6.2f} s  (short requests p95 "
              f"{quantile(short, 0.95):6.2f} s)")  # fmt: skip
    print(f"one at a time / batched: {rows[1][1] / rows[0][1]:.2f}x; "
          f"--max-batch 1 / batched (both concurrent): {rows[2][1] / rows[0][1]:.2f}x")  # fmt: skip
    print("result:", "every request answered in full" if not lost else
          f"{lost} shorter than asked (the same request short in every case: T3 drew its "
          "stop token; short in one case only: a fault)")  # fmt: skip
    return 0 if not lost else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=100, help="answered requests to reach")
    p.add_argument("--tokens", type=int, default=3, help="max_new_tokens of each request")
    p.add_argument("--max-queue", type=int, default=4)
    p.add_argument("--backoff", type=float, default=0.5, help="seconds after a 429")
    p.add_argument("--batching", action="store_true", help="the continuous-batching case")
    p.add_argument("--variant", default="nano", help="--batching: turbo or nano")
    p.add_argument("--max-batch", type=int, default=8, help="--batching: the batched server's")
    p.add_argument("--short", type=int, default=20, help="--batching: short requests' tokens")
    p.add_argument("--long", type=int, default=80, help="--batching: long requests' tokens")
    args = p.parse_args()
    if args.batching:
        return batching_case(args)

    model = short_voice_dir("nano")
    expected = 2 * (args.tokens + TAIL) * PER_TOKEN  # pcm bytes
    lock = threading.Lock()
    answered: list[float] = []
    limited: list[str | None] = []
    lost: list[str] = []
    rss: list[tuple[int, int]] = []
    import tempfile

    with (
        tempfile.TemporaryDirectory() as voices,
        CliServer(
            "--model",
            str(model),
            "--no-watermark",
            "--max-new-tokens",
            str(args.tokens),
            "--max-queue",
            str(args.max_queue),
            "--voices",
            voices,
            "--log-level",
            "warning",
        ) as server,
    ):
        rss.append((0, rss_kib(server.pid)))
        print(
            f"server pid {server.pid} at {server.url}; model {model.name}; "
            f"{args.clients} clients, until {args.requests} answered; max_new_tokens "
            f"{args.tokens}, --max-queue {args.max_queue}, pcm",
            flush=True,
        )

        def client(n: int) -> None:
            i = 0
            while True:
                with lock:
                    if len(answered) >= args.requests:
                        return
                body = {
                    "input": "Hello there, this is a load test.",
                    "voice": "alloy",
                    "response_format": "pcm",
                    "seed": 1000 * n + i,
                }
                i += 1
                started = time.perf_counter()
                try:
                    status, size, retry = speak(server.url, body)
                except OSError as err:
                    with lock:
                        lost.append(f"client {n}: {type(err).__name__}: {err}")
                    continue
                with lock:
                    if status == 200 and size == expected:
                        answered.append(time.perf_counter() - started)
                        if len(answered) % 10 == 0:
                            rss.append((len(answered), rss_kib(server.pid)))
                    elif status == 429:
                        limited.append(retry)
                    else:
                        lost.append(f"client {n}: status {status}, {size} bytes")
                if status == 429:
                    time.sleep(args.backoff)

        started = time.perf_counter()
        threads = [threading.Thread(target=client, args=(n,)) for n in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - started
        health = json.loads(urllib.request.urlopen(server.url + "/health").read())["models"][0]

    print(f"machine: {platform.machine()} {platform.system()}, python {platform.python_version()}")
    print(f"wall time: {wall:.1f} s for {len(answered)} answered requests")
    print(f"answered with audio: {len(answered)} (each {expected} bytes of pcm)")
    print(
        f"429 (queue full): {len(limited)}, all with Retry-After: "
        f"{all(r is not None and int(r) >= 1 for r in limited)}"
    )
    print(f"lost (connection errors, other statuses, short bodies): {len(lost)}")
    for line in lost[:10]:
        print("  " + line)
    if answered:
        q = statistics.quantiles(answered, n=20) if len(answered) > 1 else answered * 19
        print(
            f"latency of answered requests: median {statistics.median(answered):.2f} s, "
            f"p95 {q[18]:.2f} s, max {max(answered):.2f} s (includes waiting in the queue)"
        )
    print("server counters: " + ", ".join(f"{k} {v}" for k, v in health.items()))
    print(
        "server RSS (MiB) after N answered: "
        + ", ".join(f"{n}: {kib / 1024:.0f}" for n, kib in rss)
    )
    warm = [kib for n, kib in rss if n >= 20]
    if len(warm) >= 2:
        print(
            f"RSS growth from the 20th to the {rss[-1][0]}th answered request: "
            f"{(warm[-1] - warm[0]) / 1024:+.1f} MiB "
            f"(min {min(warm) / 1024:.0f}, max {max(warm) / 1024:.0f} MiB)"
        )
    ok = not lost and health["done"] == len(answered) and health["rejected"] == len(limited)
    print("result:", "all answered or 429, none lost" if ok else "PROBLEMS (see above)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
