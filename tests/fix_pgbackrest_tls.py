"""Two "hosts" on one machine for pgBackRest over TLS: the database host's side (a cluster and its
`pgbackrest server`, as postgres) and the bot's side (an unprivileged OS user that cannot read the
data directory, with the repository and its own `pgbackrest server`).

The bot's side runs in a forked child that dropped to that user (`as_user`): the interpreter lives
under root's 0700 home, so a new process could not start it, but a fork keeps what is loaded. What
the child imports later must already be imported here (see PRELOAD).
"""

from __future__ import annotations

import datetime as dt
import importlib
import os
import pickle
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import traceback
from pathlib import Path

import pytest

BOT_USER = "backupbot-test"
# imported before forking: the child cannot read root's site-packages
PRELOAD = ("bot.preflight", "bot.init_pgbackrest", "bot.init", "bot.console", "bot.blocks", "commands.pg.scratch",
           "commands.chat.access", "commands.restore.pitr", "commands.restore.pitr_plan", "commands.backup.physical",
           "commands.signing", "slack_sdk", "slack_sdk.errors", "psycopg.conninfo", "cryptography.x509",
           "cryptography.x509.oid", "yaml", "zoneinfo", "encodings.idna", "tests.builders", "tests.test_restore")


def ensure_bot_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(BOT_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell",
                        "/usr/sbin/nologin", BOT_USER], check=True, capture_output=True, timeout=60)
        return pwd.getpwnam(BOT_USER)


def owned_dir(prefix: str, user: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    path.chmod(0o700)
    return path


def write_owned(path: Path, data: bytes, user: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = pwd.getpwnam(user)
    os.chown(path.parent, entry.pw_uid, entry.pw_gid)
    path.write_bytes(data)
    path.chmod(mode)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


def make_certificates() -> dict[str, bytes]:
    """A throwaway CA and one certificate per host (server and client use), for 127.0.0.1: the
    database host's with CN pg.test, the bot host's with CN bot.test (what tls-server-auth names)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def pem_key(key) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("backupbot test CA")).issuer_name(name("backupbot test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    out = {"ca.crt": ca.public_bytes(serialization.Encoding.PEM)}
    for host in ("pg", "bot"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(name(f"{host}.test")).issuer_name(ca.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName("127.0.0.1"), x509.DNSName("localhost")]),
                               critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                               critical=False)
                .sign(ca_key, hashes.SHA256()))
        out[f"{host}.crt"] = cert.public_bytes(serialization.Encoding.PEM)
        out[f"{host}.key"] = pem_key(key)
    return out


def as_user(user: str, fn, *args, env: dict | None = None):
    """Run fn(*args) in a forked child that became `user` (no supplementary groups); its return value
    comes back pickled, its exception as a test failure with the child's traceback."""
    for module in PRELOAD:
        importlib.import_module(module)
    entry = pwd.getpwnam(user)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
            os.environ.update({"HOME": "/nonexistent", "USER": user, "LOGNAME": user, **(env or {})})
            try:
                result = ("ok", fn(*args))
            except BaseException:
                result = ("error", traceback.format_exc())
            with os.fdopen(write, "wb") as f:
                f.write(pickle.dumps(result))
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    if not data:
        pytest.fail(f"the child running as {user} died without an answer")
    kind, value = pickle.loads(data)
    if kind == "error":
        pytest.fail(f"as {user}:\n{value}")
    return value


def start_server(argv: list[str], user: str, port: int, env: dict | None = None, log: Path | None = None):
    """`pgbackrest server` as `user`, waited for until it listens on 127.0.0.1:port."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    out = open(log, "ab") if log else subprocess.DEVNULL
    proc = subprocess.Popen(["runuser", "-u", user, "--", *argv], env={**clean, **(env or {})}, cwd="/",
                            stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"pgbackrest server as {user} exited with {proc.returncode}: "
                                 + (log.read_text()[-800:] if log else ""))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"pgbackrest server as {user} did not listen on {port}")


def stop_server(proc) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def remove(path: Path | None) -> None:
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)
