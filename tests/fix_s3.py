"""S3 for tests: a real HTTP endpoint (moto server) so botocore's retries, timeouts and errors are exercised."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from moto.server import ThreadedMotoServer

from commands.storage.s3 import make_s3_client


class S3Server:
    """The moto server, stoppable and restartable on the same port so a test can cut S3 off mid-upload.

    Moto keeps its state in process memory, so buckets and objects survive a stop/start.
    """

    def __init__(self, host: str = "127.0.0.1"):
        self.host = host
        self.port = 0
        self.moto: ThreadedMotoServer | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.moto is not None

    def start(self) -> None:
        if self.moto is not None:
            return
        moto = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
        moto.start()
        self.port = moto.get_host_and_port()[1]
        self.moto = moto

    def stop(self) -> None:
        if self.moto is None:
            return
        moto, self.moto = self.moto, None
        moto.stop()
        # stop() only ends the serve loop; close the socket so clients get "connection refused", not a hang.
        if moto._server is not None:
            moto._server.server_close()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = S3Server()
    server.start()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ENDPOINT_URL", server.endpoint_url)
        mp.delenv("AWS_ENDPOINT_URL_S3", raising=False)
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        for name in ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE"):
            mp.delenv(name, raising=False)
        mp.setenv("NO_PROXY", ",".join(filter(None, [server.host, "localhost", os.environ.get("NO_PROXY", "")])))
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def s3_server_running(s3_server: S3Server) -> Iterator[S3Server]:
    """The server, guaranteed back up after the test even if the test stopped it."""
    s3_server.start()
    try:
        yield s3_server
    finally:
        s3_server.start()


@pytest.fixture
def s3_bucket(s3_server_running: S3Server) -> str:
    """A fresh, empty bucket per test, so tests never see each other's keys."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    make_s3_client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_storage_url(s3_bucket: str) -> str:
    return f"s3://{s3_bucket}/backups"
