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
