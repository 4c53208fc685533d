"""The CLI's and consumers' registry client keeps credentials out of what it says: a
password in the URL is sent as basic auth, never shown in an error or a log line."""

from __future__ import annotations

import base64
import http.server
import logging
import threading
from collections.abc import Iterator
from typing import ClassVar

import pytest

from featurestore.contracts.registry.client import RegistryClient
from featurestore.errors import RegistryUnavailableError
from featurestore.local.process import free_port

SECRET = "hunter2-@secret"


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        self.seen.append(self.headers.get("Authorization"))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'["payments-value"]')

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{httpd.server_port}"
    httpd.shutdown()


def test_credentials_in_the_url_become_basic_auth_and_stay_out_of_the_log(
    server: str, caplog: pytest.LogCaptureFixture
) -> None:
    _Recorder.seen.clear()
    caplog.set_level(logging.DEBUG)
    client = RegistryClient(f"http://alice:{SECRET.replace('@', '%40')}@{server}/")
    assert client.subjects() == ["payments-value"]
    sent = base64.b64encode(f"alice:{SECRET}".encode()).decode()
    assert _Recorder.seen == [f"Basic {sent}"]
    assert client.url == f"http://{server}"
    assert "HTTP Request: GET" in caplog.text  # httpx logs each request's URL
    assert "hunter2" not in caplog.text


def test_an_unreachable_registry_is_named_without_its_password() -> None:
    client = RegistryClient(f"http://alice:{SECRET.replace('@', '%40')}@127.0.0.1:{free_port()}")
    with pytest.raises(RegistryUnavailableError) as error:
        client.subjects()
    assert "127.0.0.1" in str(error.value)
    assert "hunter2" not in str(error.value)
