"""Both backends promise the same thing: an artifact is visible only once committed, and failures are StorageError."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from urllib.parse import urlparse

import pytest

from commands.errors import ConfigError, StorageError
from commands.storage import open_storage
from commands.storage.local import LocalStorage
from commands.storage.s3 import MAX_PARTS, MiB, S3Storage, make_s3_client, s3_part_size

TEST_PART = 5 * MiB


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path):
    if request.param == "local":
        return open_storage(str(tmp_path / "backups"))
    url = urlparse(request.getfixturevalue("s3_storage_url"))
    return S3Storage(url.netloc, url.path, min_part_size=TEST_PART)


def pending_uploads(storage) -> list:
    if not isinstance(storage, S3Storage):
        return []
    return make_s3_client().list_multipart_uploads(Bucket=storage.bucket).get("Uploads", [])


def test_multi_part_round_trip(storage):
    data = [os.urandom(MiB) for _ in range(20)]
    writer = storage.open_writer("db/2024/dump.zst", expected_size=20 * MiB)
    for chunk in data:
        writer.write(chunk)
    assert not storage.exists("db/2024/dump.zst")
    if isinstance(storage, S3Storage):
        parts = make_s3_client().list_parts(Bucket=storage.bucket, Key=writer.key, UploadId=writer.upload_id)["Parts"]
        assert len(parts) == 4, "full parts must be uploaded while writing, not held in memory"
    writer.commit()

    expected = b"".join(data)
    assert storage.get_bytes("db/2024/dump.zst") == expected
    streamed = hashlib.sha256()
    for chunk in storage.read_chunks("db/2024/dump.zst", chunk_size=3 * MiB + 7):
        streamed.update(chunk)
    assert streamed.hexdigest() == hashlib.sha256(expected).hexdigest()
    with storage.open_reader("db/2024/dump.zst") as f:
        assert f.read(10) == expected[:10]
    assert storage.list_keys() == ["db/2024/dump.zst"]
    assert pending_uploads(storage) == []


def test_small_and_empty_artifacts(storage):
    for key, data in (("tiny", b"x"), ("empty", b"")):
        writer = storage.open_writer(key)
        writer.write(data)
        writer.commit()
        assert storage.get_bytes(key) == data
    storage.put_bytes("meta.json", b'{"ok": true}')
    assert storage.get_bytes("meta.json") == b'{"ok": true}'


def test_nothing_visible_before_commit(storage):
    writer = storage.open_writer("db/dump.zst")
    writer.write(b"partial" * 1000)
    assert storage.list_keys() == []
    assert not storage.exists("db/dump.zst")
    with pytest.raises(StorageError):
        storage.get_bytes("db/dump.zst")
    writer.commit()
    assert storage.list_keys() == ["db/dump.zst"]


def test_abort_after_partial_writes_leaves_nothing(storage):
    writer = storage.open_writer("db/dump.zst", expected_size=12 * MiB)
    for _ in range(12):
        writer.write(os.urandom(MiB))
    writer.abort()
    writer.abort()
    assert storage.list_keys() == []
    assert not storage.exists("db/dump.zst")
    assert pending_uploads(storage) == []


def test_delete_and_list_keys(storage):
    for key in ("a/1.dump", "a/1.manifest.json", "b/2.dump"):
        storage.put_bytes(key, key.encode())
    assert storage.list_keys() == ["a/1.dump", "a/1.manifest.json", "b/2.dump"]
    assert storage.list_keys("a/") == ["a/1.dump", "a/1.manifest.json"]
    assert storage.list_keys("zzz") == []
    storage.delete("a/1.dump")
    storage.delete("a/1.dump")  # deleting twice is not an error
    assert not storage.exists("a/1.dump")
    assert storage.list_keys() == ["a/1.manifest.json", "b/2.dump"]


def test_missing_key_is_storage_error(storage):
    with pytest.raises(StorageError):
        storage.get_bytes("no/such.dump")
    with pytest.raises(StorageError):
        list(storage.read_chunks("no/such.dump"))


def test_s3_missing_key_says_not_found(s3_storage_url):
    with pytest.raises(StorageError, match="not found"):
        open_storage(s3_storage_url).get_bytes("nope.dump")


def test_s3_list_keys_paginates(s3_storage_url):
    storage = open_storage(s3_storage_url)
    keys = [f"k/{i:04d}" for i in range(1005)]
    client = make_s3_client()
    bucket = urlparse(s3_storage_url).netloc
    for key in keys:
        client.put_object(Bucket=bucket, Key=f"backups/{key}", Body=b"")
    client.put_object(Bucket=bucket, Key="elsewhere/k/0001", Body=b"")
    assert storage.list_keys("k/") == keys


def test_s3_writer_refuses_use_after_abort(s3_storage_url):
    writer = open_storage(s3_storage_url).open_writer("x.dump")
    writer.abort()
    with pytest.raises(StorageError):
        writer.write(b"more")
    with pytest.raises(StorageError):
        writer.commit()


def test_s3_url_and_location(s3_storage_url):
    storage = open_storage(s3_storage_url)
    assert isinstance(storage, S3Storage)
    assert storage.url == s3_storage_url
    assert storage.location("db/x.dump") == f"{s3_storage_url}/db/x.dump"


def test_s3_missing_bucket_is_storage_error(s3_server_running):
    storage = S3Storage("no-such-bucket-backupbot", "backups")
    with pytest.raises(StorageError, match="bucket does not exist"):
        storage.open_writer("x.dump")
    with pytest.raises(StorageError, match="bucket does not exist"):
        storage.list_keys()
    with pytest.raises(StorageError, match="bucket does not exist"):
        storage.put_bytes("x", b"1")
    with pytest.raises(StorageError, match="bucket does not exist"):
        storage.exists("x")


def test_s3_unreachable_is_storage_error_and_recovers(s3_server_running, s3_storage_url, monkeypatch):
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    storage = open_storage(s3_storage_url)
    storage.put_bytes("before", b"1")
    s3_server_running.stop()
    started = time.monotonic()
    with pytest.raises(StorageError, match="cannot reach S3") as info:
        storage.put_bytes("during", b"2")
    assert "testing" not in str(info.value)
    assert time.monotonic() - started < 30
    s3_server_running.start()
    assert storage.get_bytes("before") == b"1"
    assert storage.list_keys() == ["before"]


def test_s3_part_size():
    assert s3_part_size(0) == 64 * MiB
    assert s3_part_size(1) == 8 * MiB
    assert s3_part_size(10 * 1024 * MiB) == 8 * MiB
    assert s3_part_size(20 * MiB, min_part_size=5 * MiB) == 5 * MiB
    for expected in (100 * 1024 * MiB, 5 * 10**12, 5 * 2**40, 123_456_789_012):
        size = s3_part_size(expected)
        assert size % MiB == 0
        assert expected / size < MAX_PARTS
        assert -(-3 * expected // size) <= MAX_PARTS
    with pytest.raises(ValueError):
        S3Storage("bucket", min_part_size=MiB)


def test_local_half_written_artifact_not_listed(tmp_path):
    storage = LocalStorage(tmp_path)
    writer = storage.open_writer("db/dump.zst")
    writer.write(b"half")
    assert storage.list_keys() == []
    assert not storage.exists("db/dump.zst")
    writer.abort()
    assert list(tmp_path.rglob("*.partial-*")) == []


@pytest.mark.parametrize("key", ["../x", "a/../../x"])
def test_key_escaping_the_folder_is_refused(tmp_path, key):
    with pytest.raises(StorageError):
        LocalStorage(tmp_path / "backups").open_writer(key)
    with pytest.raises(StorageError):
        S3Storage("bucket", "backups").location(key)


@pytest.mark.parametrize("fail_at", ["write", "commit"])
def test_s3_outage_mid_upload_publishes_nothing(s3_server_running, s3_storage_url, monkeypatch, fail_at):
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    storage = S3Storage(*urlparse(s3_storage_url)[1:3], min_part_size=TEST_PART)
    writer = storage.open_writer("db/dump.zst", expected_size=20 * MiB)
    writer.write(os.urandom(6 * MiB))
    s3_server_running.stop()
    with pytest.raises(StorageError, match="cannot reach S3"):
        if fail_at == "write":
            writer.write(os.urandom(6 * MiB))
        else:
            writer.commit()
    writer.abort()
    s3_server_running.start()
    assert not storage.exists("db/dump.zst")
    assert storage.list_keys() == []


def test_a_local_folder_install_never_loads_boto3_and_s3_urls_still_work(tmp_path):
    """Backends load by URL scheme on first use: a file:// bot starts without boto3 (time and memory)."""
    program = (
        "import sys\n"
        "from commands.settings import parse_settings\n"
        "from bot.startup import start_services\n"
        "import bot.server, bot.preflight, commands.dispatch, commands.schedules\n"
        f"settings = parse_settings({{'state': {{'path': {str(tmp_path / 's.db')!r}}}, "
        f"'storage': {{'url': {'file://' + str(tmp_path / 'b')!r}}}, 'access': {{'operators': ['U0A']}}}}, {{}})\n"
        "services = start_services(settings)\n"
        "services.storage.put_bytes('k', b'v')\n"
        "print('boto3 loaded' if 'boto3' in sys.modules else 'no boto3')\n"
        "from commands.storage import open_storage\n"
        "print(type(open_storage('s3://bucket/prefix')).__name__, 'boto3' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert result.stdout.splitlines() == ["no boto3", "S3Storage True"], result.stdout + result.stderr
    with pytest.raises(ConfigError, match="unsupported scheme 'ftp'"):
        open_storage("ftp://example/x")
