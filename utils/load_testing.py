"""Load tests of a local HTTP server: how latency grows with the load (chapter 15).

:func:`load_test` is an open-loop load generator (requests leave on a schedule, Poisson or evenly
spaced, whatever the server does: the way real users arrive) or a closed-loop one (``concurrency``
clients, each sending its next request when its previous answer came: the way most benchmark tools
measure, which hides queueing because a slow server slows the clients down). ``httpx`` is imported on
first use. :mod:`utils.serving` starts the server it measures.
"""

from __future__ import annotations

import asyncio
import functools
import math
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ._checks import check_bool, check_int, check_real, check_seed

__all__ = ["LoadTestResult", "load_test"]


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
