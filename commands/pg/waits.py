"""What a job's own server sessions are waiting for, and how to end them (and only them).

A job's tools connect with their own `application_name` (`backupbot backup #7`), so the watchdog
(commands/chat/stall.py) can find the job's backends, ask pg_blocking_pids who holds the lock they
wait for, and describe that session (pid, user, application, state, since when). Ending sessions
is limited to the job's own application_name and never a pid from pg_blocking_pids: the session
someone else holds a lock in is theirs to finish.
"""

from __future__ import annotations

import re

import psycopg

WAITS = """
SELECT a.pid, a.wait_event_type, a.wait_event,
       (SELECT coalesce(json_agg(json_build_object(
                 'pid', h.pid, 'user', h.usename, 'application', h.application_name, 'state', h.state,
                 'query_start', h.query_start, 'xact_start', h.xact_start) ORDER BY h.pid), '[]'::json)
          FROM pg_stat_activity h WHERE h.pid = ANY (pg_blocking_pids(a.pid)))
  FROM pg_stat_activity a
 WHERE a.application_name = %s AND a.pid <> pg_backend_pid()
 ORDER BY a.pid
"""


def job_application_name(kind: str, job_id: int | None) -> str:
    return f"backupbot {kind} #{job_id}" if job_id is not None else f"backupbot {kind}"


def describe_waits(dsn: str, application_name: str, connect_timeout: int = 10) -> str | None:
    """What the job's backends wait for: `a lock (Lock/relation) held by pid 4242 (user alice, application psql,
    idle in transaction since 2026-12-01T12:00:00+00:00)`; None when none of them waits."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=connect_timeout,
                         application_name="backupbot watchdog") as conn:
        rows = conn.execute(WAITS, [application_name]).fetchall()
    said = []
    for pid, event_type, event, holders in rows:
        if holders:
            who = "; ".join(_holder(h) for h in holders)
            said.append(f"a lock ({event_type}/{event}) held by {who}")
        elif event_type:
            said.append(f"{event_type}/{event} (pid {pid}, no session holds a lock it waits for)")
    return "; ".join(said) or None


def _holder(h: dict) -> str:
    since = re.sub(r"\.\d+", "", str(h.get("xact_start") or h.get("query_start") or "")) or None
    return (f"pid {h['pid']} (user {h.get('user') or '?'}, application {h.get('application') or '(none)'}, "
            f"{h.get('state') or 'state unknown'}" + (f" since {since}" if since else "") + ")")


def end_own_sessions(dsn: str, application_name: str, connect_timeout: int = 10) -> list[int]:
    """Terminate the job's own backends (a killed pg_dump's backend can wait on its lock for hours
    after its client is gone); returns their pids. Only sessions with the job's application_name."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=connect_timeout,
                         application_name="backupbot watchdog") as conn:
        rows = conn.execute("SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE application_name = %s AND pid <> pg_backend_pid()", [application_name]).fetchall()
    return [pid for pid, _ in rows]


class JobSessions:
    """One job's children and server sessions, found by its application_name: what the stall watchdog
    describes (`describe`) and ends (`stop`). The tools report the bytes they move through `moved`."""

    def __init__(self, dsn: str, kind: str, job_id: int | None):
        self.dsn = dsn
        self.application_name = job_application_name(kind, job_id)
        self.children: list = []
        self.on_bytes = None  # the watchdog's `moved`, set once it exists

    def child(self, proc) -> None:
        self.children.append(proc)

    def moved(self, total_bytes: int) -> None:
        if self.on_bytes is not None:
            self.on_bytes(total_bytes)

    def env(self, env: dict[str, str]) -> dict[str, str]:
        return {**env, "PGAPPNAME": self.application_name}

    def describe(self) -> str | None:
        return describe_waits(self.dsn, self.application_name)

    def stop(self) -> None:
        """The job's own processes, then its own sessions (a killed client's backend can wait on its lock
        for hours); never the session it waited for."""
        for proc in self.children:
            if proc.poll() is None:
                proc.kill()
        end_own_sessions(self.dsn, self.application_name)
