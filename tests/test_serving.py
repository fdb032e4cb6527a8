"""utils.serving: a server started by `serve` answers on 127.0.0.1 and is always stopped."""

import math
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from utils.serving import DynamicBatcher, free_port, serve


class Query(BaseModel):
    text: str


def make_app():
    app = FastAPI()

    @app.post("/echo")
    def echo(query: Query):
        return {"length": len(query.text)}

    return app


def port_is_open(port):
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_server_answers_on_loopback_and_is_stopped_after_the_block():
    with serve(make_app()) as url:
        assert url.startswith("http://127.0.0.1:")
        response = httpx.post(url + "/echo", json={"text": "hello"})
        assert response.status_code == 200 and response.json() == {"length": 5}
        port = int(url.rsplit(":", 1)[1])
        assert port_is_open(port)
    assert not port_is_open(port)


def test_malformed_request_gets_a_4xx_with_a_message_not_a_crash():
    with serve(make_app()) as url:
        response = httpx.post(url + "/echo", json={"txt": 3})
        assert response.status_code == 422 and "text" in response.text
        assert httpx.post(url + "/echo", json={"text": "still up"}).status_code == 200


def test_server_is_stopped_when_the_block_raises():
    with pytest.raises(ZeroDivisionError):
        with serve(make_app()) as url:
            port = int(url.rsplit(":", 1)[1])
            1 / 0
    assert not port_is_open(port)


@pytest.mark.parametrize("kwargs,error,match", [
    ({"host": "0.0.0.0"}, ValueError, "loopback"),
    ({"port": 0}, ValueError, "port"),
    ({"port": "8000"}, ValueError, "port"),
    ({"startup_timeout_s": 0}, ValueError, "startup_timeout_s"),
])
def test_serve_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        with serve(make_app(), **kwargs):
            pass


def test_serve_rejects_an_app_that_is_not_callable():
    with pytest.raises(TypeError, match="ASGI"):
        with serve("app"):
            pass


def test_a_port_already_in_use_raises_a_clear_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(RuntimeError, match="stopped while starting|did not start"):
            with serve(make_app(), port=busy.getsockname()[1], startup_timeout_s=5):
                pass


def test_free_port_returns_a_bindable_port():
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def slow_double(items):
    time.sleep(0.02)  # long enough for concurrent callers to queue up behind the first batch
    return [2 * x for x in items]


def test_dynamic_batcher_returns_each_caller_its_own_result_in_order():
    with DynamicBatcher(slow_double, max_batch=8, max_wait_ms=20) as batcher:
        with ThreadPoolExecutor(16) as pool:
            assert list(pool.map(batcher, range(40))) == [2 * x for x in range(40)]
        assert sum(batcher.batch_sizes) == 40


def test_dynamic_batcher_groups_concurrent_calls_and_respects_max_batch():
    with DynamicBatcher(slow_double, max_batch=4, max_wait_ms=50) as batcher:
        futures = [batcher.submit(x) for x in range(10)]  # all waiting before the worker's deadline
        assert [f.result(timeout=5) for f in futures] == [2 * x for x in range(10)]
        assert batcher.batch_sizes == [4, 4, 2]


def test_dynamic_batcher_with_zero_wait_runs_a_lone_call_at_once():
    with DynamicBatcher(lambda xs: list(xs), max_batch=32, max_wait_ms=0) as batcher:
        start = time.perf_counter()
        assert batcher("x") == "x"
        assert time.perf_counter() - start < 1.0
        assert batcher.batch_sizes == [1]


def test_dynamic_batcher_hands_a_failing_batch_to_every_caller_and_carries_on():
    def fail_on_negative(items):
        if any(x < 0 for x in items):
            raise ArithmeticError("negative item")
        return items

    with DynamicBatcher(fail_on_negative, max_batch=8, max_wait_ms=30) as batcher:
        futures = [batcher.submit(x) for x in (1, -1, 2)]
        for future in futures:
            with pytest.raises(ArithmeticError, match="negative"):
                future.result(timeout=5)
        assert batcher(5) == 5


def test_dynamic_batcher_rejects_fn_returning_the_wrong_number_of_results():
    with DynamicBatcher(lambda xs: xs[:-1], max_wait_ms=0) as batcher:
        with pytest.raises(ValueError, match="one result per item"):
            batcher(1)


def test_dynamic_batcher_thread_stops_on_close_and_refuses_new_items():
    with DynamicBatcher(slow_double) as batcher:
        assert batcher(1) == 2
    assert batcher.closed and not batcher._thread.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(1)
    batcher.close()  # closing twice is harmless


def test_dynamic_batcher_is_closed_when_the_block_raises():
    with pytest.raises(KeyError):
        with DynamicBatcher(slow_double) as batcher:
            raise KeyError("boom")
    assert not batcher._thread.is_alive()


@pytest.mark.parametrize("kwargs,error,match", [
    ({"max_batch": 0}, ValueError, "max_batch"),
    ({"max_batch": True}, TypeError, "max_batch"),
    ({"max_batch": 2.5}, TypeError, "max_batch"),
    ({"max_wait_ms": -1}, ValueError, "max_wait_ms"),
    ({"max_wait_ms": math.nan}, ValueError, "max_wait_ms"),
    ({"max_wait_ms": "5"}, TypeError, "max_wait_ms"),
])
def test_dynamic_batcher_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        DynamicBatcher(slow_double, **kwargs)


def test_dynamic_batcher_rejects_an_fn_that_is_not_callable():
    with pytest.raises(TypeError, match="callable"):
        DynamicBatcher([1, 2])


def test_dynamic_batching_behind_a_server_groups_concurrent_requests():
    threads_before = {t.name for t in threading.enumerate()}
    with DynamicBatcher(slow_double, max_batch=16, max_wait_ms=20) as batcher:
        app = FastAPI()

        @app.get("/double/{x}")
        def double(x: int):
            return {"result": batcher(x, timeout=10)}

        with serve(app) as url, httpx.Client(base_url=url, timeout=10) as client:
            with ThreadPoolExecutor(8) as pool:
                results = list(pool.map(lambda x: client.get(f"/double/{x}").json()["result"], range(32)))
        assert results == [2 * x for x in range(32)]
        assert max(batcher.batch_sizes) > 1 and len(batcher.batch_sizes) < 32
    leftover = {t.name for t in threading.enumerate() if t.is_alive()} - threads_before
    assert not {name for name in leftover if name.startswith(("uvicorn", "dynamic-batcher"))}


# --- open- and closed-loop load tests, IPv6, bounded shutdown, close() and fn contracts ---------------------------

import warnings  # noqa: E402

from utils.serving import load_test  # noqa: E402

SERVICE_S = 0.05  # the slow server below answers one request at a time, each taking this long (20 requests/s)


def make_slow_app():
    app = FastAPI()
    one_at_a_time = threading.Lock()

    @app.post("/slow")
    def slow(query: Query):
        with one_at_a_time:
            time.sleep(SERVICE_S)
        return {"length": len(query.text)}

    @app.get("/fail")
    def fail():
        from fastapi import HTTPException
        raise HTTPException(status_code=503, detail="down")

    return app


def test_open_loop_shows_the_queue_that_a_closed_loop_hides():
    """At twice the server's capacity the open loop's latencies grow with the queue; one closed-loop client
    just waits for each answer and sees the bare service time (coordinated omission)."""
    with serve(make_slow_app()) as url:
        opened = load_test(url + "/slow", {"text": "hi"}, rate_per_s=2 / SERVICE_S, duration_s=2.0,
                           arrivals="fixed", timeout_s=20)
        closed = load_test(url + "/slow", {"text": "hi"}, open_loop=False, concurrency=1, duration_s=1.0)
    assert opened.errors == 0 and opened.sent == opened.completed == 80
    assert closed.errors == 0 and closed.completed >= 3
    # 80 requests need >= 4 s of service in a 2 s window: the last ones wait about 2 s in the queue
    assert opened.p95_s > 20 * SERVICE_S
    assert opened.latencies_s[-5:].mean() > opened.latencies_s[:5].mean() + 10 * SERVICE_S
    assert closed.p95_s < 10 * SERVICE_S < opened.p95_s
    assert closed.throughput_rps <= 1.2 / SERVICE_S and opened.throughput_rps <= 1.2 / SERVICE_S


def test_open_loop_on_a_fast_server_sends_on_schedule_and_counts_everything():
    with serve(make_app()) as url:
        result = load_test(url + "/echo", {"text": "hello"}, rate_per_s=40, duration_s=1.0, seed=3)
        again = load_test(url + "/echo", {"text": "hello"}, rate_per_s=40, duration_s=1.0, seed=3)
    assert result.sent == again.sent > 10  # the Poisson schedule depends on the seed only
    assert result.completed == result.sent and result.errors == 0
    assert len(result.latencies_s) == result.completed and (result.latencies_s > 0).all()
    assert result.p50_s <= result.p95_s and result.throughput_rps > 0


def test_errors_are_counted_not_timed():
    with serve(make_slow_app()) as url:
        result = load_test(url + "/fail", rate_per_s=20, duration_s=0.5, arrivals="fixed")
    assert result.errors == result.sent == 10 and result.completed == 0
    assert math.isnan(result.p95_s) and "503" in result.error_messages[0]


def test_requests_that_time_out_are_errors():
    with serve(make_slow_app()) as url:
        result = load_test(url + "/slow", {"text": "x"}, rate_per_s=100, duration_s=0.3, arrivals="fixed",
                           timeout_s=0.12)
    assert result.sent == 30 and result.errors >= 20  # 30 queued * 50 ms: most cannot finish within 0.12 s


@pytest.mark.parametrize("kwargs,match", [
    ({"rate_per_s": 0, "duration_s": 1}, "rate_per_s"),
    ({"rate_per_s": -5, "duration_s": 1}, "rate_per_s"),
    ({"rate_per_s": math.nan, "duration_s": 1}, "rate_per_s"),
    ({"rate_per_s": 10, "duration_s": 0}, "duration_s"),
    ({"rate_per_s": 10, "duration_s": math.nan}, "duration_s"),
    ({"rate_per_s": 10, "duration_s": 1, "timeout_s": 0}, "timeout_s"),
    ({"duration_s": 1}, "rate_per_s"),                                            # open loop without a rate
    ({"rate_per_s": 10, "duration_s": 1, "concurrency": 4}, "concurrency"),       # would be ignored
    ({"open_loop": False, "duration_s": 1}, "concurrency"),                       # closed loop without clients
    ({"open_loop": False, "concurrency": 4, "rate_per_s": 10, "duration_s": 1}, "rate_per_s"),  # would be ignored
    ({"open_loop": False, "concurrency": 0, "duration_s": 1}, "concurrency"),
    ({"open_loop": "False", "concurrency": 2, "duration_s": 1}, "open_loop"),
    ({"rate_per_s": 10, "duration_s": 1, "arrivals": "uniform"}, "arrivals"),
])
def test_load_test_rejects_bad_or_ignored_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_test("http://127.0.0.1:9/x", **kwargs)


def test_load_test_rejects_a_url_that_is_not_http():
    with pytest.raises(ValueError, match="url"):
        load_test("127.0.0.1:8000", rate_per_s=1, duration_s=1)


def test_load_test_accepts_numpy_scalars():
    with serve(make_app()) as url:
        import numpy as np
        result = load_test(url + "/echo", {"text": "a"}, rate_per_s=np.float64(20), duration_s=np.float32(0.5),
                           arrivals="fixed")
    assert result.sent == 10 and result.errors == 0


def ipv6_loopback_available():
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_loopback_available(), reason="this machine has no IPv6 loopback")
def test_serve_on_the_ipv6_loopback():
    with serve(make_app(), host="::1") as url:
        assert url.startswith("http://[::1]:")
        assert httpx.post(url + "/echo", json={"text": "hello"}).json() == {"length": 5}
        port = int(url.rsplit(":", 1)[1])
    with socket.socket(socket.AF_INET6) as sock:
        sock.settimeout(0.5)
        assert sock.connect_ex(("::1", port)) != 0


def test_shutdown_is_bounded_and_warns_about_a_handler_that_outlives_it():
    app = FastAPI()
    release = threading.Event()

    @app.get("/stuck")
    def stuck():
        release.wait(30)
        return {"ok": True}

    client = threading.Thread(target=lambda: httpx.get(url + "/stuck", timeout=60), daemon=True)
    try:
        with pytest.warns(RuntimeWarning, match="still running"):
            with serve(app, shutdown_timeout_s=0.5) as url:
                client.start()
                time.sleep(0.5)  # the request is inside the handler now
                start = time.perf_counter()
        assert time.perf_counter() - start < 10  # bounded, although the handler would block 30 s
    finally:
        release.set()
        client.join(10)


def test_serve_rejects_a_bad_shutdown_timeout():
    with pytest.raises(ValueError, match="shutdown_timeout_s"):
        with serve(make_app(), shutdown_timeout_s=math.nan):
            pass


def test_dynamic_batcher_close_runs_the_items_submitted_before_it():
    batcher = DynamicBatcher(slow_double, max_batch=2, max_wait_ms=0)
    futures = [batcher.submit(x) for x in range(6)]
    batcher.close()
    assert [f.result(timeout=5) for f in futures] == [0, 2, 4, 6, 8, 10]  # as close's docstring says
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(7)


def test_dynamic_batcher_close_is_bounded_and_warns_when_fn_is_still_running():
    release = threading.Event()
    batcher = DynamicBatcher(lambda xs: (release.wait(10), xs)[1], max_wait_ms=0)
    future = batcher.submit("x")
    time.sleep(0.1)
    start = time.perf_counter()
    with pytest.warns(RuntimeWarning, match="still running"):
        batcher.close(timeout=0.2)
    assert time.perf_counter() - start < 5
    release.set()
    assert future.result(timeout=5) == "x"  # the item submitted before close still gets its result


def test_dynamic_batcher_says_what_fn_must_return_when_it_returns_none():
    def forgot_return(items):
        [2 * x for x in items]

    with DynamicBatcher(forgot_return, max_wait_ms=0) as batcher:
        with pytest.raises(TypeError, match="must return a list .* one result per item"):
            batcher(1)


def test_arrival_schedule_is_seeded_and_stays_within_the_duration():
    import numpy as np

    from utils.load_testing import _arrival_schedule
    poisson = _arrival_schedule(50.0, 2.0, "poisson", 7)
    np.testing.assert_array_equal(poisson, _arrival_schedule(50.0, 2.0, "poisson", 7))
    assert poisson[0] == 0.0 and (np.diff(poisson) >= 0).all() and poisson[-1] < 2.0
    assert 60 < len(poisson) < 140  # about rate * duration = 100
    np.testing.assert_allclose(_arrival_schedule(4.0, 1.0, "fixed", 0), [0.0, 0.25, 0.5, 0.75])
    assert len(_arrival_schedule(0.1, 1.0, "fixed", 0)) == 1  # always at least one request


def test_summarise_orders_latencies_by_send_time_and_counts_the_rest_as_errors():
    from utils.load_testing import _summarise
    measured = {"latencies": [(0.2, 0.03), (0.0, 0.01), (0.1, 0.02)], "sent": 5, "errors": ["HTTP 503"] * 2,
                "elapsed": 0.5, "lag": 0.001}
    result = _summarise(measured, True, 10.0, None)
    assert list(result.latencies_s) == [0.01, 0.02, 0.03]
    assert (result.sent, result.completed, result.errors) == (5, 3, 2)
    assert result.open_loop and result.offered_rps == 10.0 and result.concurrency is None
    assert result.max_send_lag_s == 0.001 and result.error_messages == ("HTTP 503", "HTTP 503")
    closed = _summarise({**measured, "lag": 0.0}, False, None, 4)
    assert closed.offered_rps is None and closed.concurrency == 4 and not closed.open_loop
