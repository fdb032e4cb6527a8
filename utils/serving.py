"""Serve an ASGI app (FastAPI) on 127.0.0.1 from a notebook, and always stop it (chapter 15).

- :func:`serve` — a context manager that runs the app with uvicorn and always stops it.
- :class:`DynamicBatcher` — groups concurrent single-item calls (one per request) into one
  batch call of a model, waiting at most ``max_wait_ms`` for up to ``max_batch`` items.
- :func:`load_test` — an open-loop (requests leave on a schedule, whatever the server does) or
  closed-loop (``concurrency`` clients, each waiting for its previous answer) load generator.

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
import functools
import math
import queue
import socket
import threading
import time
import warnings
import weakref
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ._checks import check_bool, check_int, check_real, check_seed

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


@dataclass(frozen=True)
class LoadTestResult:
    """What :func:`load_test` measured.

    ``latencies_s`` holds one latency per successful request, in send order: in an open loop it is
    counted from the request's *scheduled* send time (so time spent waiting because the client or the
    server fell behind is included — no coordinated omission), in a closed loop from the moment the
    client sent it. ``sent`` requests left, ``completed`` got a 2xx/3xx answer, ``errors`` got a 4xx/5xx
    answer, a timeout or a connection error. ``elapsed_s`` runs from the first scheduled send to the last
    answer; ``max_send_lag_s`` is how late the generator itself sent its latest request (open loop; a
    large value means the client, not the server, was the bottleneck).
    """

    latencies_s: np.ndarray
    sent: int
    completed: int
    errors: int
    elapsed_s: float
    open_loop: bool
    offered_rps: float | None
    concurrency: int | None
    max_send_lag_s: float = 0.0
    error_messages: tuple[str, ...] = field(default=(), repr=False)

    @property
    def p50_s(self) -> float:
        """Median latency of the successful requests, in seconds (nan if none succeeded)."""
        return float(np.percentile(self.latencies_s, 50)) if self.completed else math.nan

    @property
    def p95_s(self) -> float:
        """95th-percentile latency of the successful requests, in seconds (nan if none succeeded)."""
        return float(np.percentile(self.latencies_s, 95)) if self.completed else math.nan

    @property
    def throughput_rps(self) -> float:
        """Successful requests per second over :attr:`elapsed_s`."""
        return self.completed / self.elapsed_s if self.elapsed_s > 0 else 0.0


def load_test(url: str, payload: Any = None, *, rate_per_s: float | None = None, duration_s: float,
              open_loop: bool = True, concurrency: int | None = None, timeout_s: float = 10.0,
              arrivals: str = "poisson", seed: int = 0) -> LoadTestResult:
    """Load-test ``url`` (POST ``payload`` as JSON, or GET when ``payload`` is None) for ``duration_s`` seconds.

    - ``open_loop=True`` (give ``rate_per_s``, not ``concurrency``): requests leave on a schedule —
      ``arrivals="poisson"`` (exponential gaps, mean ``1/rate_per_s``, like independent users) or
      ``"fixed"`` (evenly spaced) — whatever the server does, and each latency is counted from the
      request's scheduled send time. When the server cannot keep up, the queue shows in the latencies.
    - ``open_loop=False`` (give ``concurrency``, not ``rate_per_s``): ``concurrency`` clients, each
      sending its next request only when its previous answer came. A slow server slows the clients
      down, so the queue never builds (coordinated omission: Gil Tene, "How NOT to measure latency").

    An argument that the chosen mode would ignore is refused (ValueError), as are rates, durations and
    timeouts that are not positive finite numbers. The client runs its own event loop in a helper
    thread, so it works inside a notebook. Requests that take longer than ``timeout_s`` count as errors;
    the test waits for the last ones at most ``timeout_s`` after ``duration_s``.

    Example:
        >>> with serve(app) as url:                                # doctest: +SKIP
        ...     result = load_test(url + "/ping", rate_per_s=50, duration_s=2)
        >>> result.sent, result.errors, round(result.p95_s, 3)     # doctest: +SKIP
        (97, 0, 0.004)
    """
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError(f"url must be an http(s) URL string such as 'http://127.0.0.1:8000/predict', got {url!r}")
    open_loop = check_bool("open_loop", open_loop)
    duration_s = check_real("duration_s", duration_s, positive=True)
    timeout_s = check_real("timeout_s", timeout_s, positive=True)
    if arrivals not in ("poisson", "fixed"):
        raise ValueError(f"arrivals must be 'poisson' or 'fixed', got {arrivals!r}")
    seed = check_seed("seed", seed)
    rate_per_s, concurrency = _check_mode(open_loop, rate_per_s, concurrency, duration_s)
    schedule = _arrival_schedule(rate_per_s, duration_s, arrivals, seed) if open_loop else None
    measured = _measure(url, payload, schedule, concurrency, duration_s, timeout_s)
    return _summarise(measured, open_loop, rate_per_s, concurrency)


def _check_mode(open_loop: bool, rate_per_s: Any, concurrency: Any, duration_s: float) -> tuple[Any, Any]:
    """``(rate_per_s, concurrency)`` checked for the mode; the one the mode would ignore must be None."""
    if open_loop:
        if concurrency is not None:
            raise ValueError("concurrency is for a closed loop (open_loop=False); an open loop sends at rate_per_s "
                             "whatever the server does — pass rate_per_s only")
        if rate_per_s is None:
            raise ValueError("an open loop needs rate_per_s (requests per second to offer)")
        rate_per_s = check_real("rate_per_s", rate_per_s, positive=True)
        if rate_per_s * duration_s > 1_000_000:
            raise ValueError(f"rate_per_s * duration_s = {rate_per_s * duration_s:.0f} requests: keep it below 1e6")
        return rate_per_s, concurrency
    if rate_per_s is not None:
        raise ValueError("rate_per_s is for an open loop; a closed loop's rate is set by the server — pass "
                         "concurrency only (or open_loop=True)")
    if concurrency is None:
        raise ValueError("a closed loop (open_loop=False) needs concurrency (the number of clients)")
    return rate_per_s, check_int("concurrency", concurrency, minimum=1)


def _arrival_schedule(rate_per_s: float, duration_s: float, arrivals: str, seed: int) -> np.ndarray:
    """Open-loop send times in seconds from the start, below ``duration_s``: Poisson or evenly spaced."""
    rng = np.random.default_rng(seed)
    count = max(1, int(round(rate_per_s * duration_s)))
    if arrivals == "poisson":
        schedule = np.concatenate([[0.0], np.cumsum(rng.exponential(1 / rate_per_s, size=4 * count + 16))])
        return schedule[schedule < duration_s]
    return np.arange(count) / rate_per_s


def _measure(url: str, payload: Any, schedule: np.ndarray | None, concurrency: int | None, duration_s: float,
             timeout_s: float) -> dict[str, Any]:
    """Send the requests from an event loop in a helper thread; the raw results, or the exception raised."""
    import httpx  # noqa: PLC0415 - imported on first use

    box: dict[str, Any] = {}
    main = functools.partial(_send_all, httpx, url, payload, schedule, concurrency, duration_s, timeout_s)

    def runner() -> None:
        try:
            with warnings.catch_warnings():  # a request cancelled by its timeout while connecting makes anyio's
                warnings.filterwarnings("ignore", message="coroutine .* was never awaited")  # helper say this
                box.update(asyncio.run(main()))
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = error

    thread = threading.Thread(target=runner, name="load-test", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box


async def _send_all(httpx: Any, url: str, payload: Any, schedule: np.ndarray | None, concurrency: int | None,
                    duration_s: float, timeout_s: float) -> dict[str, Any]:
    """Send the requests (open loop if ``schedule`` is given, else closed) through one client; the raw results."""
    latencies: list = []  # (scheduled send time, latency) of each successful request
    errors: list = []
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)  # beyond: queued in the client
    async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as client:
        start = time.perf_counter()
        send = functools.partial(_send_one, client, url, payload, timeout_s, latencies, errors, start)  # send(due)
        if schedule is not None:
            sent, lag = await _send_open_loop(send, schedule, start, timeout_s)
        else:
            sent, lag = await _send_closed_loop(send, concurrency, start, duration_s, timeout_s), 0.0
        elapsed = time.perf_counter() - start
    return {"latencies": latencies, "sent": sent, "errors": errors, "elapsed": elapsed, "lag": lag}


async def _send_one(client: Any, url: str, payload: Any, timeout_s: float, latencies: list, errors: list, start: float,
                    due: float) -> None:
    """Send one request; record its latency counted from ``due`` (seconds after ``start``), or its error."""
    try:  # timeout_s bounds the whole request, waiting for a connection included
        request = client.post(url, json=payload) if payload is not None else client.get(url)
        response = await asyncio.wait_for(request, timeout_s)
        if response.status_code >= 400:
            errors.append(f"HTTP {response.status_code}")
        else:
            latencies.append((due, time.perf_counter() - start - due))
    except Exception as error:  # noqa: BLE001 - a failed request is a measured error, not a crash
        errors.append(f"{type(error).__name__}: {error}"[:200])


async def _send_open_loop(send: Callable, schedule: np.ndarray, start: float, timeout_s: float) -> tuple[int, float]:
    """Send at each scheduled time whatever the server does, then wait for the answers; ``(sent, max send lag)``."""
    tasks, lag = [], 0.0
    for due in schedule:
        wait = due - (time.perf_counter() - start)
        if wait > 0:
            await asyncio.sleep(wait)
        lag = max(lag, float(time.perf_counter() - start - due))
        tasks.append(asyncio.ensure_future(send(float(due))))
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=timeout_s + 1.0)
        for task in pending:  # cannot happen with the per-request timeout; never leave a task behind
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    return len(tasks), lag


async def _send_closed_loop(send: Callable, concurrency: int, start: float, duration_s: float, timeout_s: float) -> int:
    """``concurrency`` clients, each sending its next request once its previous answer came; the number sent."""
    sent = 0

    async def client_loop() -> None:
        nonlocal sent
        while (now := time.perf_counter() - start) < duration_s:
            sent += 1
            await send(now)

    await asyncio.wait_for(asyncio.gather(*(client_loop() for _ in range(concurrency))),
                           timeout=duration_s + timeout_s + 1.0)
    return sent


def _summarise(measured: dict, open_loop: bool, rate_per_s: float | None, concurrency: int | None) -> LoadTestResult:
    """The :class:`LoadTestResult` of :func:`_send_all`'s raw results (latencies in send order)."""
    latencies = np.array([lat for _, lat in sorted(measured["latencies"])], dtype=float)
    completed = len(latencies)
    return LoadTestResult(latencies_s=latencies, sent=measured["sent"], completed=completed,
                          errors=measured["sent"] - completed, elapsed_s=measured["elapsed"], open_loop=open_loop,
                          offered_rps=rate_per_s if open_loop else None, concurrency=None if open_loop else concurrency,
                          max_send_lag_s=measured["lag"], error_messages=tuple(measured["errors"][:20]))
