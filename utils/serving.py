"""Serve an ASGI app (FastAPI) on 127.0.0.1 from a notebook, and always stop it (chapter 15).

:func:`serve` is a context manager: it starts ``uvicorn`` in a daemon thread of the current
process on a free loopback port, waits until the server accepts connections, yields its base
URL, and on exit — normal or by an exception — asks the server to shut down and joins the
thread. An ``atexit`` hook stops any server still running when the interpreter exits, and the
daemon thread cannot outlive the process (a notebook's kernel). ``uvicorn`` is imported on
first use, so ``import utils`` stays fast.
"""

from __future__ import annotations

import atexit
import contextlib
import socket
import threading
import time
from typing import Any, Iterator

__all__ = ["free_port", "serve"]

_RUNNING: set[Any] = set()  # uvicorn.Server objects still running (stopped by the atexit hook)
_LOCK = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it).

    Example:
        >>> 1024 <= free_port() <= 65535
        True
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _stop_all() -> None:
    with _LOCK:
        servers = list(_RUNNING)
    for server in servers:
        server.should_exit = True


atexit.register(_stop_all)


@contextlib.contextmanager
def serve(app: Any, *, host: str = "127.0.0.1", port: int | None = None, startup_timeout_s: float = 20.0,
          log_level: str = "warning") -> Iterator[str]:
    """Run ``app`` with uvicorn on ``host:port`` inside the ``with`` block; yield ``"http://host:port"``.

    Only loopback hosts are accepted (``127.0.0.1``, ``localhost``, ``::1``): a course server is
    never reachable from another machine. ``port=None`` picks a free one. Raises RuntimeError if
    the server has not started within ``startup_timeout_s`` seconds (or died while starting).

    Example:
        >>> from fastapi import FastAPI
        >>> app = FastAPI(); _ = app.get("/ping")(lambda: {"ok": True})
        >>> with serve(app) as url:
        ...     httpx.get(url + "/ping").json()
        {'ok': True}
    """
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"host must be a loopback address (127.0.0.1, localhost or ::1), got {host!r}")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535):
        raise ValueError(f"port must be None (pick a free one) or an int in 1…65535, got {port!r}")
    if isinstance(startup_timeout_s, bool) or not isinstance(startup_timeout_s, (int, float)) or not startup_timeout_s > 0:
        raise ValueError(f"startup_timeout_s must be a positive number of seconds, got {startup_timeout_s!r}")
    if not callable(app):
        raise TypeError(f"app must be an ASGI application such as fastapi.FastAPI(), got {type(app).__name__}")
    import uvicorn  # noqa: PLC0415 - heavy, imported on first use

    port = free_port(host if host != "localhost" else "127.0.0.1") if port is None else port
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False, lifespan="off")
    server = uvicorn.Server(config)

    def run() -> None:
        try:
            server.run()
        except SystemExit:  # uvicorn exits this way when it cannot bind; the caller gets RuntimeError
            pass

    thread = threading.Thread(target=run, name=f"uvicorn:{port}", daemon=True)
    with _LOCK:
        _RUNNING.add(server)
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout_s
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError(f"the server on {host}:{port} stopped while starting (is the port in use?)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server on {host}:{port} did not start within {startup_timeout_s} s")
            time.sleep(0.02)
        yield f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        with _LOCK:
            _RUNNING.discard(server)
