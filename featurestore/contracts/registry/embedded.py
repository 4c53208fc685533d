"""The registry served from inside another process (uvicorn in a thread): for tests,
benchmarks and demos that need a real registry without a second process.

The listening socket is bound before the server starts, so the URL is known at once
and no other process can take the port in between; a stopped instance starts again on
the same port and topic.
"""

from __future__ import annotations

import socket
import threading
import time

import uvicorn

from featurestore.contracts.registry.app import RegistryAuth, create_app
from featurestore.contracts.registry.log import SchemaLog
from featurestore.contracts.registry.state import RegistryState
from featurestore.errors import LocalServiceError


class _ObservedLog(SchemaLog):
    """The real log, remembering why it failed to start (uvicorn only says it did)."""

    failure: BaseException | None = None

    def start(self) -> None:
        try:
            super().start()
        except BaseException as exc:
            self.failure = exc
            raise


class EmbeddedRegistry:
    """One registry instance on ``topic``: start, stop, and start again."""

    def __init__(
        self, kafka: str, topic: str, auth: RegistryAuth | None = None, port: int = 0
    ) -> None:
        self.kafka = kafka
        self.topic = topic
        self.auth = auth or RegistryAuth()
        self.port = port
        self.state = RegistryState()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> EmbeddedRegistry:
        self.state = RegistryState()
        log = _ObservedLog(self.state, self.kafka, self.topic)
        app = create_app(self.state, log, self.auth)
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        self.port = listener.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
        self._server, self._thread = server, thread
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                listener.close()
                raise LocalServiceError(
                    f"the registry on {self.url} did not start: {log.failure!r}"
                )
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=30)
        self._server = self._thread = None
