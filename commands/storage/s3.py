"""S3 storage: artifacts stream in as a multipart upload, which S3 publishes only on completion.

A pending multipart upload is invisible to GET and LIST, so a crash mid-dump never leaves a
half-written object under the key. Uploads that even `abort()` could not remove (S3 unreachable)
linger as billed parts; a bucket lifecycle rule "AbortIncompleteMultipartUpload" cleans them up.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO
from urllib.parse import urlparse

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, ReadTimeoutError
from botocore.exceptions import ConnectionError as S3ConnectionError

from commands.errors import ConfigError, StorageError

MiB = 1 << 20
MAX_PARTS = 10_000
S3_MIN_PART = 5 * MiB
S3_MAX_PART = 5 * 1024 * MiB
DEFAULT_MIN_PART = 8 * MiB
UNKNOWN_SIZE_PART = 64 * MiB
# Dumps of a growing database overshoot its current size; leave room for 3x before hitting MAX_PARTS.
SIZE_HEADROOM = 3


def make_s3_client() -> Any:
    """The one place a boto3 client is built, so endpoint, addressing and timeouts stay consistent."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
    # Our defaults only where AWS_RETRY_MODE / AWS_MAX_ATTEMPTS don't say otherwise; botocore reads those itself.
    retries: dict[str, Any] = {}
    if not os.environ.get("AWS_RETRY_MODE"):
        retries["mode"] = "standard"
    if not os.environ.get("AWS_MAX_ATTEMPTS"):
        retries["max_attempts"] = 4
    config = Config(
        s3={"addressing_style": "path"},  # MinIO/moto/Ceph endpoints rarely resolve bucket subdomains
        connect_timeout=10,
        read_timeout=60,
        retries=retries,
    )
    # A fresh session per client: the default session is not safe to share across threads.
    return boto3.session.Session().client("s3", endpoint_url=endpoint, config=config)


def s3_part_size(expected_size: int, min_part_size: int = DEFAULT_MIN_PART) -> int:
    """Part size keeping SIZE_HEADROOM x expected_size under S3's 10,000-part limit, in whole MiB."""
    if expected_size <= 0:
        size = max(UNKNOWN_SIZE_PART, min_part_size)
    else:
        size = max(-(-expected_size * SIZE_HEADROOM // MAX_PARTS), min_part_size)
    size = -(-size // MiB) * MiB
    return min(max(size, S3_MIN_PART), S3_MAX_PART)


def _reason(exc: Exception) -> str:
    """A short cause without endpoint credentials, request ids or signatures."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "")) or "unknown"
        if code in ("NoSuchKey", "404", "NotFound"):
            return "not found"
        if code == "NoSuchBucket":
            return "bucket does not exist"
        if code in ("AccessDenied", "403", "Forbidden"):
            return "access denied"
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"):
            return f"credentials rejected ({code})"
        return code
    if isinstance(exc, NoCredentialsError):
        return "no AWS credentials found"
    if isinstance(exc, S3ConnectionError):
        endpoint = urlparse(str(getattr(exc, "kwargs", {}).get("endpoint_url", "")))
        where = f" at {endpoint.hostname}" + (f":{endpoint.port}" if endpoint.port else "") if endpoint.hostname else ""
        return f"cannot reach S3{where}"
    if isinstance(exc, ReadTimeoutError):
        return "S3 did not answer in time"
    return type(exc).__name__


def _storage_error(action: str, exc: Exception) -> StorageError:
    reason = _reason(exc)
    if reason == "not found":
        return StorageError(f"{action}: not found")
    return StorageError(f"{action} failed: {reason}")


_S3_ERRORS = (ClientError, BotoCoreError)


class S3ArtifactWriter:
    """Buffers at most one part; each full part is uploaded as soon as it fills."""

    def __init__(self, client: Any, bucket: str, key: str, name: str, part_size: int):
        self._client = client
        self.bucket = bucket
        self.key = key
        self._name = name
        self.part_size = part_size
        self._buffer = bytearray()
        self._parts: list[dict[str, Any]] = []
        self._done = False
        try:
            self.upload_id: str = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        except _S3_ERRORS as exc:
            raise _storage_error(f"starting upload of {name}", exc) from exc

    def write(self, data: bytes) -> None:
        if self._done:
            raise StorageError(f"writing {self._name} failed: writer already closed")
        view = memoryview(data)
        with self._aborting_on_error("writing"):
            while view:
                take = self.part_size - len(self._buffer)
                self._buffer += view[:take]
                view = view[take:]
                if len(self._buffer) >= self.part_size:
                    self._upload_part()

    @contextmanager
    def _aborting_on_error(self, action: str) -> Iterator[None]:
        """Any failure inside aborts the multipart upload (nothing becomes visible) and raises a StorageError."""
        try:
            yield
        except _S3_ERRORS as exc:
            self.abort()
            raise _storage_error(f"{action} {self._name}", exc) from exc
        except StorageError:
            self.abort()
            raise

    def _upload_part(self) -> None:
        number = len(self._parts) + 1
        if number > MAX_PARTS:
            raise StorageError(f"writing {self._name} failed: larger than {MAX_PARTS} parts of {self.part_size // MiB} MiB")
        response = self._client.upload_part(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=bytes(self._buffer)
        )
        self._parts.append({"PartNumber": number, "ETag": response["ETag"]})
        self._buffer = bytearray()

    def commit(self) -> None:
        if self._done:
            raise StorageError(f"storing {self._name} failed: writer already closed")
        with self._aborting_on_error("storing"):
            if self._buffer or not self._parts:
                self._upload_part()
            self._client.complete_multipart_upload(
                Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": self._parts}
            )
        self._done = True
        self._buffer = bytearray()

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._buffer = bytearray()
        try:
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
        except _S3_ERRORS:
            pass  # best effort: the upload stays invisible; a lifecycle rule reclaims its parts


class _S3Raw(io.RawIOBase):
    """Maps botocore errors raised mid-stream to StorageError."""

    def __init__(self, body: Any, name: str):
        self._body = body
        self._name = name

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            data = self._body.read(len(buffer))
        except _S3_ERRORS as exc:
            raise _storage_error(f"reading {self._name}", exc) from exc
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


class S3Storage:
    def __init__(self, bucket: str, prefix: str = "", *, min_part_size: int = DEFAULT_MIN_PART):
        if min_part_size < S3_MIN_PART:
            raise ValueError(f"min_part_size must be at least {S3_MIN_PART} bytes (S3's floor)")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.min_part_size = min_part_size
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._client_instance: Any = None

    @property
    def _client(self) -> Any:
        # Built lazily so loading the configuration needs neither credentials nor network.
        if self._client_instance is None:
            self._client_instance = make_s3_client()
        return self._client_instance

    def _key(self, key: str) -> str:
        parts = key.split("/")
        if not key or key.startswith("/") or any(part in ("", ".", "..") for part in parts):
            raise StorageError(f"key {key!r} is not a plain relative path")
        return f"{self.prefix}/{key}" if self.prefix else key

    def open_writer(self, key: str, expected_size: int = 0) -> S3ArtifactWriter:
        part_size = s3_part_size(expected_size, self.min_part_size)
        return S3ArtifactWriter(self._client, self.bucket, self._key(key), key, part_size)

    def _get(self, key: str) -> Any:
        try:
            return self._client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        except _S3_ERRORS as exc:
            raise _storage_error(f"reading {key}", exc) from exc

    def open_reader(self, key: str) -> BinaryIO:
        return io.BufferedReader(_S3Raw(self._get(key), key), buffer_size=MiB)  # type: ignore[return-value]

    def read_chunks(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        with self.open_reader(key) as f:
            while chunk := f.read(chunk_size):
                yield chunk

    def put_bytes(self, key: str, data: bytes) -> None:
        try:
            self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except _S3_ERRORS as exc:
            raise _storage_error(f"storing {key}", exc) from exc

    def get_bytes(self, key: str) -> bytes:
        with self.open_reader(key) as f:
            return f.read()

    def exists(self, key: str) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if _reason(exc) == "not found":
                self._check_bucket()
                return False
            raise _storage_error(f"checking {key}", exc) from exc
        except BotoCoreError as exc:
            raise _storage_error(f"checking {key}", exc) from exc
        return True

    def size(self, key: str) -> int:
        try:
            return int(self._client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"])
        except _S3_ERRORS as exc:
            raise _storage_error(f"reading {key}", exc) from exc

    def _check_bucket(self) -> None:
        # HEAD of a key answers a bare 404 for a missing bucket too; don't report that as "no such key".
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except _S3_ERRORS as exc:
            reason = "bucket does not exist" if _reason(exc) == "not found" else _reason(exc)
            raise StorageError(f"checking {self.url} failed: {reason}") from exc

    def delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except _S3_ERRORS as exc:
            raise _storage_error(f"deleting {key}", exc) from exc

    def list_keys(self, prefix: str = "") -> list[str]:
        base = f"{self.prefix}/" if self.prefix else ""
        keys = []
        try:
            for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base + prefix):
                keys.extend(item["Key"][len(base) :] for item in page.get("Contents", []))
        except _S3_ERRORS as exc:
            raise _storage_error(f"listing {self.url}", exc) from exc
        return sorted(keys)

    def location(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"


def from_url(url: str, parsed) -> S3Storage:
    """`s3://bucket/prefix` (commands.storage.BACKENDS)."""
    if len(parsed.netloc) < 3:
        raise ConfigError(f"storage.url: bucket name {parsed.netloc!r} is too short")
    return S3Storage(bucket=parsed.netloc, prefix=parsed.path.strip("/"))
