"""pg_bin_for: the newest installed client program whose major version is at least the server's,
from a Debian-like /usr/lib/postgresql/N/bin root and PATH, or a message that says what to install."""

from __future__ import annotations

import subprocess

import psycopg
import pytest

from commands.errors import DumpError
from commands.pg.tools import pg_bin_for


def fake_tool(path, major: int):
    """An executable that answers --version like the real one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho '{path.name} (PostgreSQL) {major}.3 (fake)'\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "usr-lib-postgresql"
    for major in (13, 15, 16):
        for name in ("pg_dump", "pg_restore", "psql"):
            fake_tool(root / str(major) / "bin" / name, major)
    (root / "14" / "bin").mkdir(parents=True)  # a major without pg_dump (server package only) is not a candidate
    return root


def test_the_newest_client_is_chosen_for_an_older_or_equal_server(root):
    assert pg_bin_for("pg_dump", 13, root=root, path="") == str(root / "16" / "bin" / "pg_dump")
    assert pg_bin_for("pg_restore", 16, root=root, path="") == str(root / "16" / "bin" / "pg_restore")
    assert pg_bin_for("psql", 15, root=root, path="") == str(root / "16" / "bin" / "psql")


def test_a_newer_client_on_path_wins_and_debians_wrapper_is_not_counted(root, tmp_path):
    on_path = fake_tool(tmp_path / "opt" / "bin" / "pg_dump", 17)
    wrapper = fake_tool(tmp_path / "share" / "pg_wrapper", 18)  # Debian's /usr/bin/pg_dump -> pg_wrapper
    (tmp_path / "usr-bin").mkdir()
    (tmp_path / "usr-bin" / "pg_dump").symlink_to(wrapper)
    search = f"{tmp_path / 'usr-bin'}:{on_path.parent}"
    assert pg_bin_for("pg_dump", 17, root=root, path=search) == str(on_path)
    assert pg_bin_for("pg_dump", 15, root=root, path=search) == str(on_path)


def test_no_client_new_enough_names_what_to_install(root):
    with pytest.raises(DumpError) as error:
        pg_bin_for("pg_dump", 17, root=root, path="")
    message = str(error.value)
    assert "pg_dump 17 or newer is needed for this PostgreSQL 17 server" in message
    assert f"installed: 16 ({root / '16' / 'bin' / 'pg_dump'}), 15 (" in message
    assert "Install postgresql-client-17" in message


def test_nothing_installed_at_all_says_where_it_looked(tmp_path):
    with pytest.raises(DumpError) as error:
        pg_bin_for("pg_restore", 15, root=tmp_path / "none", path="")
    assert f"installed: none on PATH or in {tmp_path / 'none'}/*/bin" in str(error.value)
    assert "Install postgresql-client-15" in str(error.value)


def test_on_this_machine_the_chosen_pg_dump_fits_the_real_server(pg_dsn):
    with psycopg.connect(pg_dsn) as conn:
        server_major = conn.info.server_version // 10000
    chosen = pg_bin_for("pg_dump", server_major)
    version = subprocess.run([chosen, "--version"], capture_output=True, text=True, check=True).stdout
    assert int(version.split("(PostgreSQL) ")[1].split(".")[0]) >= server_major
