"""The ComfyUI client's failures as one line each, against real sockets: nothing listening on the port."""

from __future__ import annotations

import socket
import time

import pytest

from sonic_core.fleet.comfy_client import ComfyClient, ComfyUnavailable


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # released on close: nothing listens there


def test_a_server_that_is_down_is_one_line_after_the_retries():
    client = ComfyClient(f"http://127.0.0.1:{closed_port()}", retries=2, backoff=0.01)
    assert not client.alive()
    with pytest.raises(ComfyUnavailable) as error:
        client.submit({"1": {"class_type": "LoadImage", "inputs": {}}})
    message = str(error.value)
    assert "\n" not in message and "did not answer POST /prompt after 3 tries" in message
    assert "check that the server is running" in message


def test_backoff_doubles_between_tries():
    client = ComfyClient(f"http://127.0.0.1:{closed_port()}", retries=3, backoff=0.05)
    began = time.monotonic()
    with pytest.raises(ComfyUnavailable):
        client.queue()
    assert time.monotonic() - began >= 0.05 + 0.1 + 0.2  # waited 0.05, 0.1, 0.2 s between the four tries
