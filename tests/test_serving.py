"""utils.serving: a server started by `serve` answers on 127.0.0.1 and is always stopped."""

import socket

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from utils.serving import free_port, serve


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
