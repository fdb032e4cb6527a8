"""Serve an ASGI app (FastAPI) on 127.0.0.1 from a notebook, and always stop it (chapter 15).

- :func:`serve` — a context manager that runs the app with uvicorn and always stops it.
- :class:`DynamicBatcher` — groups concurrent single-item calls (one per request) into one
  batch call of a model, waiting at most ``max_wait_ms`` for up to ``max_batch`` items.
- :func:`load_test` — an open-loop (requests leave on a schedule, whatever the server does) or
  closed-loop (``concurrency`` clients, each waiting for its previous answer) load generator; it
  lives in :mod:`utils.load_testing` and is importable from here.

:func:`serve` is a context manager: it starts ``uvicorn`` in a daemon thread of the current
process on a free loopback port, waits until the server accepts connections, yields its base
URL, and on exit — normal or by an exception — asks the server to shut down and joins the
thread. An ``atexit`` hook stops any server still running when the interpreter exits, and the
daemon thread cannot outlive the process (a notebook's kernel). ``uvicorn`` is imported on
first use, so ``import utils`` stays fast.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import math
import queue
import socket
import threading
import time
import warnings
import weakref
from concurrent.futures import Future
from typing import Any, Callable, Iterator, Sequence

from ._checks import check_int, check_real
from .load_testing import LoadTestResult, load_test

__all__ = ["DynamicBatcher", "LoadTestResult", "free_port", "load_test", "serve"]

_RUNNING: set[Any] = set()  # uvicorn.Server objects still running (stopped by the atexit hook)
_LOCK = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it); ``host`` may be IPv6 (``"::1"``).

    Example:
        >>> 1024 <= free_port() <= 65535
        True
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _stop_all() -> None:
    with _LOCK:
        servers = list(_RUNNING)
    for server in servers:
        server.should_exit = True
    for batcher in list(_BATCHERS):
        batcher.close(timeout=2.0)


atexit.register(_stop_all)


@contextlib.contextmanager
def serve(app: Any, *, host: str = "127.0.0.1", port: int | None = None, startup_timeout_s: float = 20.0,
          shutdown_timeout_s: float = 5.0, log_level: str = "warning") -> Iterator[str]:
    """Run ``app`` with uvicorn on ``host:port`` inside the ``with`` block; yield ``"http://host:port"``.

    Only loopback hosts are accepted (``127.0.0.1``, ``localhost``, ``::1`` — the IPv6 URL is
    ``"http://[::1]:port"``): a course server is never reachable from another machine. ``port=None``
    picks a free one. Raises RuntimeError if the server has not started within ``startup_timeout_s``
    seconds (or died while starting).

    Leaving the block is bounded: open requests get ``shutdown_timeout_s`` seconds to finish, then are
    cancelled, and the block is left at most about 2 s later. A handler that is still running then
    (a Python thread cannot be killed) is reported with a RuntimeWarning naming the threads; as
    daemon threads they end with the process at the latest.

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
    shutdown_timeout_s = check_real("shutdown_timeout_s", shutdown_timeout_s, positive=True)
    if not callable(app):
        raise TypeError(f"app must be an ASGI application such as fastapi.FastAPI(), got {type(app).__name__}")
    import uvicorn  # noqa: PLC0415 - heavy, imported on first use

    port = free_port(host if host != "localhost" else "127.0.0.1") if port is None else port
    cancelled = [0]  # requests still running when the shutdown timeout ended them

    async def guarded(scope: Any, receive: Any, send: Any) -> None:
        try:
            await app(scope, receive, send)
        except asyncio.CancelledError:  # a sync handler's thread cannot be cancelled: it runs on, unobserved
            cancelled[0] += 1
            raise

    config = uvicorn.Config(guarded, host=host, port=port, log_level=log_level, access_log=False, lifespan="off",
                            interface="asgi3", timeout_graceful_shutdown=max(1, math.ceil(shutdown_timeout_s)))
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
        thread.join(timeout=shutdown_timeout_s + 2.0)
        if thread.is_alive():  # uvicorn cannot finish: a request handler is still running
            server.force_exit = True
            thread.join(timeout=1.0)
        with _LOCK:
            _RUNNING.discard(server)
        if thread.is_alive() or cancelled[0]:
            warnings.warn(f"the server on {host}:{port} has stopped, but {cancelled[0] or 'a'} request handler(s) were "
                          f"still running after the {shutdown_timeout_s:g} s shutdown timeout: a handler running in a "
                          "thread cannot be stopped and outlives the server (as a daemon thread, until it returns "
                          "or the process ends)", RuntimeWarning, stacklevel=3)


_BATCHERS: "weakref.WeakSet[DynamicBatcher]" = weakref.WeakSet()  # still open (closed by the atexit hook)
_STOP = object()


class DynamicBatcher:
    """Run concurrent single-item calls as one call of ``fn`` on a list of items (dynamic batching).

    Each caller hands over one item (``batcher(item)`` blocks, ``batcher.submit(item)`` returns a
    :class:`concurrent.futures.Future`). One worker thread takes the first waiting item, then keeps
    collecting until it has ``max_batch`` items or ``max_wait_ms`` milliseconds have passed since
    it took the first, calls ``fn(items)`` once and hands result ``i`` to the caller of item ``i``.
    ``fn`` must return one result per item, in order; if it raises, every caller of that batch gets
    the exception and the batcher carries on. ``max_wait_ms=0`` groups only what is already waiting.
    The sizes of the batches run so far are in :attr:`batch_sizes`.

    Use it as a context manager (or call :meth:`close`): the worker is a daemon thread, stopped on
    exit from the ``with`` block, and an ``atexit`` hook closes any batcher still open, so it never
    outlives the process. :meth:`close` drains: items submitted before it still run and get their
    results; items submitted after it are refused with a RuntimeError.

    Example:
        >>> with DynamicBatcher(lambda xs: [2 * x for x in xs], max_batch=8, max_wait_ms=2) as double:
        ...     double(21)
        42
    """

    def __init__(self, fn: Callable[[list[Any]], Sequence[Any]], *, max_batch: int = 32,
                 max_wait_ms: float = 5.0) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be a callable taking a list of items and returning one result per item, "
                            f"got {type(fn).__name__}")
        self.max_batch = check_int("max_batch", max_batch, minimum=1)
        self.max_wait_ms = check_real("max_wait_ms", max_wait_ms, non_negative=True)
        self._fn = fn
        self._queue: queue.Queue = queue.Queue()
        self._sizes: list[int] = []
        self._closed = False
        self._close_lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="dynamic-batcher", daemon=True)
        self._thread.start()
        _BATCHERS.add(self)

    @property
    def batch_sizes(self) -> list[int]:
        """The number of items in each batch run so far (a copy)."""
        return list(self._sizes)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def submit(self, item: Any) -> Future:
        """Queue ``item``; the returned future gets its result (or ``fn``'s exception)."""
        future: Future = Future()
        with self._close_lock:  # no item may slip in behind the stop marker
            if self._closed:
                raise RuntimeError("this DynamicBatcher is closed: create a new one (or use it inside its with block)")
            self._queue.put((item, future))
        return future

    def __call__(self, item: Any, timeout: float | None = None) -> Any:
        """``fn([..., item, ...])``'s result for ``item``, computed in a batch with concurrent callers."""
        return self.submit(item).result(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Refuse new items, run every item submitted before this call, then stop the worker.

        Waits at most ``timeout`` seconds for that; if ``fn`` is still running then, warns (RuntimeWarning)
        and returns — the worker finishes the items in the background and stops (it is a daemon thread).

        Example:
            >>> batcher = DynamicBatcher(lambda xs: xs)
            >>> future = batcher.submit(1); batcher.close(); future.result()
            1
        """
        timeout = check_real("timeout", timeout, non_negative=True)
        with self._close_lock:
            if not self._closed:
                self._closed = True
                self._queue.put(_STOP)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
            if self._thread.is_alive():
                warnings.warn(f"DynamicBatcher.close: fn was still running after {timeout:g} s; the worker finishes "
                              "the items submitted before close in the background, then stops", RuntimeWarning,
                              stacklevel=2)
        _BATCHERS.discard(self)

    def __enter__(self) -> "DynamicBatcher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _loop(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is _STOP:
                break
            batch = [first]
            deadline = time.monotonic() + self.max_wait_ms / 1000
            while len(batch) < self.max_batch:
                remaining = deadline - time.monotonic()
                try:
                    entry = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if entry is _STOP:
                    stop = True
                    break
                batch.append(entry)
            self._run(batch)
        while True:  # fail whatever is left (nothing can be added after the stop marker)
            try:
                entry = self._queue.get_nowait()
            except queue.Empty:
                break
            if entry is not _STOP and entry[1].set_running_or_notify_cancel():
                entry[1].set_exception(RuntimeError("the DynamicBatcher was closed before this item ran"))

    def _run(self, batch: list[tuple[Any, Future]]) -> None:
        batch = [(item, future) for item, future in batch if future.set_running_or_notify_cancel()]
        if not batch:
            return
        try:
            results = self._fn([item for item, _ in batch])
            if results is None or isinstance(results, (str, bytes)) or not hasattr(results, "__len__"):
                raise TypeError(f"fn returned {type(results).__name__} for a batch of {len(batch)} items: it must "
                                "return a list (or another sequence, e.g. an array) with exactly one result per "
                                "item, in order — did it forget a `return`?")
            results = list(results)
            if len(results) != len(batch):
                raise ValueError(f"fn returned {len(results)} results for a batch of {len(batch)} items: "
                                 "it must return exactly one result per item, in order")
        except BaseException as error:  # noqa: BLE001 - handed to every caller, the worker carries on
            for _, future in batch:
                future.set_exception(error)
            return
        self._sizes.append(len(batch))
        for (_, future), result in zip(batch, results):
            future.set_result(result)
