"""Execute a chapter headless with papermill: shared by the notebook tests and `make bench`.

Works around a known hang (jupyter/nbclient#312): with ipywidgets, the reply to a cell's
execute request is sometimes never picked up although the kernel has finished, most often on a
loaded machine. nbclient waits for that reply in one unbounded ``socket.poll``; if the socket's
wake-up is missed, it waits forever. ``patch_reply_polling`` makes the wait poll in one-second
slices (each new poll sees a message already queued), so a missed wake-up costs at most a
second. As a last resort a cell times out after ``CELL_TIMEOUT_S`` and the chapter runs once more.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from queue import Empty

CELL_TIMEOUT_S = 600
_PATCHED = False


def patch_reply_polling() -> None:
    """Make jupyter_client's async channel wait in 1 s slices instead of one unbounded poll."""
    global _PATCHED
    if _PATCHED:
        return
    from jupyter_client.channels import AsyncZMQSocketChannel

    single_poll = AsyncZMQSocketChannel.get_msg

    async def get_msg(self, timeout: float | None = None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                return await single_poll(self, timeout=1.0 if remaining is None else min(1.0, remaining))
            except Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise

    AsyncZMQSocketChannel.get_msg = get_msg
    _PATCHED = True


def _timed_out(exc: BaseException) -> bool:
    return "Timeout" in type(exc).__name__ or "timed out" in str(exc).lower()


def execute_chapter(path: Path, out: Path, *, cwd: Path, **parameters) -> int:
    """Run ``path`` with papermill into ``out``; return the number of attempts (1, or 2 after a time-out)."""
    import papermill

    patch_reply_polling()
    for attempt in (1, 2):
        try:
            papermill.execute_notebook(
                str(path), str(out), cwd=str(cwd), kernel_name="python3", parameters=parameters or None,
                progress_bar=False, log_output=False, execution_timeout=CELL_TIMEOUT_S,
            )
            return attempt
        except Exception as exc:
            if attempt == 2 or not _timed_out(exc):
                raise
            print(f"{path.name}: a cell timed out after {CELL_TIMEOUT_S} s; running the chapter once more")
    raise AssertionError("unreachable")


def main(argv: list[str]) -> int:
    """``python tests/nbrun.py SRC OUT CWD``: run one chapter in this process (used for parallel runs)."""
    if len(argv) != 3:
        print("usage: python tests/nbrun.py SOURCE.ipynb OUT.ipynb CWD", file=sys.stderr)
        return 2
    src, out, cwd = (Path(a) for a in argv)
    print(f"ATTEMPTS={execute_chapter(src, out, cwd=cwd)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
