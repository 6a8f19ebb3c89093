"""The web page in a real browser: headless Chromium driven over the DevTools protocol
(``--remote-debugging-pipe``: JSON messages on file descriptors 3 and 4, so nothing
beyond Chromium and the standard library is needed) against the server on the Nano
random-weight model. The page loads without console errors, MP3 generation plays in
the <audio> element while it streams (MediaSource), WAV through Web Audio, an uploaded
voice appears in the picker and can be deleted; a screenshot is saved in the test's
temporary folder.

Needs Chromium (Debian: ``apt-get install chromium``); ``$CHROMIUM`` names another
binary (Chrome works too). Without one the test is skipped, saying so, or fails where
``CHATTERBOX_MLX_REQUIRE_BROWSER=1`` (CI).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from chatterbox_mlx.server.app import Settings, create_app
from chatterbox_mlx.tts import load_pipeline

import pytest

from tests.helpers.server import ThreadServer, short_voice_dir, write_clip

pytestmark = [pytest.mark.server, pytest.mark.browser, pytest.mark.slow]

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    "--remote-debugging-pipe",
)
TIMEOUT = 300  # seconds for one generation on a loaded 2-core machine


def find_chromium() -> str | None:
    named = os.environ.get("CHROMIUM")
    if named:
        return named
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    return None


class Browser:
    """Chromium with the DevTools protocol on a pipe; one page (``evaluate``, ``call``)."""

    def __init__(self, binary: str, profile: Path):
        ours_read, chrome_write = os.pipe()
        chrome_read, ours_write = os.pipe()

        def pipes_at_3_and_4() -> None:
            read, write = os.dup(chrome_read), os.dup(chrome_write)  # inheritable copies
            os.dup2(read, 3)
            os.dup2(write, 4)

        self.proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            preexec_fn=pipes_at_3_and_4,
            close_fds=False,  # (subprocess would close 3 and 4 after preexec_fn)
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(chrome_read)
        os.close(chrome_write)
        self._out = os.fdopen(ours_write, "wb", buffering=0)
        self._in = os.fdopen(ours_read, "rb", buffering=0)
        self._buffer = b""
        self._id = 0
        self.events: list[dict] = []
        self.session = None
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        for domain in ("Runtime", "Log", "Page", "DOM"):
            self.call(f"{domain}.enable")
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=900,
            height=1040,
            deviceScaleFactor=1,
            mobile=False,
        )

    def call(self, method: str, **params):
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if self.session and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self.session
        self._out.write(json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def _read(self) -> dict:
        while b"\0" not in self._buffer:
            data = self._in.read(1 << 16)
            if not data:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buffer += data
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def evaluate(self, expression: str, await_promise: bool = False):
        result = self.call(
            "Runtime.evaluate",
            expression=expression,
            returnByValue=True,
            awaitPromise=await_promise,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait(self, expression: str, what: str, timeout: float = TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                state = self.evaluate(
                    "JSON.stringify([document.getElementById('status')"
                    ".textContent, window.chatterboxPage && "
                    "chatterboxPage.stats])"
                )
                raise AssertionError(f"timed out waiting for {what}; page: {state}")
            time.sleep(0.1)

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads seen so far."""
        out = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                out.append(json.dumps(params["exceptionDetails"])[:500])
            elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                out.append(json.dumps(params["args"])[:500])
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                out.append(params["entry"]["text"])
        return out

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (RuntimeError, OSError):
            pass
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def page_server(tmp_path_factory):
    model = load_pipeline(str(short_voice_dir("nano")))
    settings = Settings(watermark=False, max_new_tokens=12, chunk_tokens=2)
    app = create_app(
        {"nano": model}, settings=settings, voices_dir=tmp_path_factory.mktemp("browser-voices")
    )
    with ThreadServer(app) as server:
        yield server


def test_page_generates_plays_and_uploads_a_voice(page_server, tmp_path):
    binary = find_chromium()
    if binary is None:
        message = "no Chromium found (apt-get install chromium, or set $CHROMIUM)"
        if os.environ.get("CHATTERBOX_MLX_REQUIRE_BROWSER") == "1":  # CI: must run
            pytest.fail(message)
        pytest.skip(message)
    browser = Browser(binary, Path(tempfile.mkdtemp(dir=tmp_path)))
    try:
        browser.call("Page.navigate", url=page_server.url + "/")
        browser.wait(
            f"location.href === {json.dumps(page_server.url + '/')} && "
            "document.readyState === 'complete'",
            "the navigation",
        )
        browser.wait(
            "document.getElementById('status').dataset.state === 'idle' && "
            "document.getElementById('status').textContent === 'Ready.'",
            "the page",
        )
        assert (
            browser.evaluate(  # Nano takes no language
                "getComputedStyle(document.getElementById('languageLabel')).display"
            )
            == "none"
        )
        models = "[...document.getElementById('model').options].map(o => o.value)"
        assert browser.evaluate(models) == ["nano"]
        params = browser.evaluate(
            "Object.fromEntries([...document.querySelectorAll('[data-param]')]"
            ".map(i => [i.dataset.param, Number(i.value)]))"
        )
        # upstream's Nano defaults, max_new_tokens at the server's cap
        assert params == {
            "temperature": 0.8,
            "top_p": 0.95,
            "top_k": 1000,
            "repetition_penalty": 1.2,
            "max_new_tokens": 12,
        }

        # MP3: MediaSource; the <audio> element gets data and plays
        browser.evaluate(
            "document.getElementById('seed').value = '1';"
            "document.getElementById('generate').click()"
        )
        browser.wait("document.getElementById('status').dataset.state === 'done'", "mp3 done")
        stats = browser.evaluate("chatterboxPage.stats")
        assert stats["mode"] == "mediasource" and stats["bytes"] > 0 and stats["chunks"] > 1
        browser.wait(
            "document.getElementById('player').currentTime > 0 && "
            "chatterboxPage.stats.playing !== undefined",
            "mp3 playback",
        )
        audio = browser.evaluate(
            "(a => ({buffered: a.buffered.length ? a.buffered.end(0) : 0, played: a.played.length,"
            " error: a.error && a.error.message}))(document.getElementById('player'))"
        )
        assert audio["error"] is None and audio["played"] >= 1
        assert audio["buffered"] >= (12 + 3) * 0.04 - 0.01  # all of it reached the element
        assert browser.evaluate("!!document.getElementById('download').href.startsWith('blob:')")

        # WAV: Web Audio, scheduled chunk by chunk as the stream arrives
        browser.evaluate(
            "document.getElementById('format').value = 'wav';"
            "document.getElementById('generate').click()"
        )
        browser.wait("document.getElementById('status').dataset.state === 'done'", "wav done")
        stats = browser.evaluate("chatterboxPage.stats")
        assert stats["mode"] == "webaudio" and stats["chunks"] > 1
        assert abs(stats["scheduled"] - (12 + 3) * 0.04) < 0.01
        assert stats["playing"] < stats["ended"]  # it started before the stream ended
        browser.wait(
            "chatterboxPage.player.ctx.state === 'running' && "
            "chatterboxPage.player.ctx.currentTime > 0",
            "Web Audio playing",
        )
        assert browser.evaluate("document.getElementById('download').download") == "speech.wav"
        # the replay (and download) copy has a real WAV header: the player knows its length
        browser.wait(
            "Math.abs(document.getElementById('player').duration - 0.6) < 0.01",
            "the replay copy's duration",
        )

        # upload a voice: it appears in the picker, selected; then delete it
        clip = write_clip(tmp_path / "me.wav", 5.5)
        node = browser.call("Runtime.evaluate", expression="document.getElementById('voiceFile')")[
            "result"
        ]
        browser.call("DOM.setFileInputFiles", files=[str(clip)], objectId=node["objectId"])
        browser.evaluate(
            "document.getElementById('voiceName').value = 'Browser Voice';"
            "document.getElementById('upload').click()"
        )
        browser.wait(
            "document.getElementById('voiceStatus').textContent.startsWith('Added')", "the upload"
        )
        picker = browser.evaluate(
            "(s => ({value: s.value, options: [...s.options].map(o => [o.value, o.text])}))"
            "(document.getElementById('voice'))"
        )
        assert picker == {
            "value": "browser-voice",
            "options": [["default", "Built-in voice"], ["browser-voice", "Browser Voice"]],
        }
        shot = browser.call("Page.captureScreenshot", format="png")
        (tmp_path / "server-page.png").write_bytes(base64.b64decode(shot["data"]))

        browser.evaluate("document.getElementById('deleteVoice').click()")
        browser.wait(
            "document.getElementById('voiceStatus').textContent === 'Deleted.'", "the deletion"
        )
        remaining = browser.evaluate(
            "[...document.getElementById('voice').options].map(o => o.value)"
        )
        assert remaining == ["default"]
        assert browser.problems() == []
    finally:
        browser.close()
    assert (tmp_path / "server-page.png").stat().st_size > 10_000
