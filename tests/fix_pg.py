"""Real PostgreSQL for the tests: one throwaway cluster per session, a fresh database per test."""

from __future__ import annotations

import itertools
import re

import pytest

from commands.pg.cluster import TemporaryCluster
from commands.pg.sample_data import load_sample_database

_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def pg_cluster():
    cluster = TemporaryCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def dr_cluster():
    """A second, empty PostgreSQL server on another port: the new host a disaster restore goes to."""
    cluster = TemporaryCluster().start()
    yield cluster
    cluster.stop()


def _fresh_name(request) -> str:
    slug = re.sub(r"[^a-z0-9_]+", "_", request.node.name.lower()).strip("_")
    return f"t_{next(_numbers)}_{slug}"[:63]


@pytest.fixture
def pg_dsn(pg_cluster, request):
    """A fresh, empty database, dropped after the test."""
    name = _fresh_name(request)
    dsn = pg_cluster.create_database(name)
    yield dsn
    pg_cluster.drop_database(name)


@pytest.fixture
def sample_dsn(pg_dsn):
    """A fresh database holding the sample application schema and rows."""
    load_sample_database(pg_dsn)
    return pg_dsn
