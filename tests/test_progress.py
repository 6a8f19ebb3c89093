"""Progress display: nested tasks share one live display; disabled means silent."""

import io

from chatterbox_mlx.pipeline.progress import Progress

from rich.console import Console


def test_nested_tasks_render_and_clean_up():
    progress = Progress(enabled=True)
    buffer = io.StringIO()
    progress._progress.live.console = Console(file=buffer, force_terminal=True)
    with progress.task("chunks", 2) as chunk:
        for _ in range(2):
            with progress.task("speech tokens", 3) as token:
                for _ in range(3):
                    token(1)
            chunk(1)
    assert progress._depth == 0 and not progress._progress.tasks
    assert "chunks" in buffer.getvalue()


def test_disabled_is_silent(capsys):
    progress = Progress(enabled=False)
    with progress.status("loading"), progress.task("x", 1) as advance:
        advance(1)
    captured = capsys.readouterr()
    assert captured.out == captured.err == ""
