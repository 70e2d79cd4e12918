"""Each lifecycle's moves are checked in one place (state/statuses.py): an illegal one is refused, the
status it had stays, and the error says what was tried."""

from __future__ import annotations

import pytest

from state import approvals as request_state
from state import jobs as job_state
from state.statuses import IllegalTransition, JobStatus, RequestStatus, Verification, allowed, final_statuses
from state.store import Store


def test_a_finished_job_cannot_be_finished_again(tmp_path):
    store = Store(tmp_path / "state.db")
    job = job_state.claim_database(store, "backup", "main", "U1")
    job_state.finish_job(store, job.id, JobStatus.FAILED, "pg_dump exited 1")
    with pytest.raises(IllegalTransition, match=f"job #{job.id} cannot go from failed to succeeded"):
        job_state.finish_job(store, job.id, JobStatus.SUCCEEDED)
    again = job_state.get_job(store, job.id)
    assert again.status == JobStatus.FAILED and again.error == "pg_dump exited 1"


def test_an_interrupted_job_keeps_its_verdict(tmp_path):
    store = Store(tmp_path / "state.db")
    job = job_state.claim_database(store, "restore", "main", "U1")
    assert [j.id for j in job_state.mark_interrupted_jobs(store)] == [job.id]
    with pytest.raises(IllegalTransition):
        job_state.finish_job(store, job.id, JobStatus.SUCCEEDED)
    assert job_state.get_job(store, job.id).status == JobStatus.INTERRUPTED


def _request(store: Store) -> request_state.RestoreRequestRow:
    return request_state.create_request(store, {"database": "main"}, "main", "U1", "C1", True, 1,
                                        "2026-01-01T00:00:00+00:00", "2026-01-01T00:30:00+00:00")


def test_an_expired_request_cannot_start(tmp_path):
    store = Store(tmp_path / "state.db")
    row = _request(store)
    assert request_state.transition(store, row.id, RequestStatus.PENDING, RequestStatus.EXPIRED)
    with pytest.raises(IllegalTransition, match="cannot go from expired to running"):
        request_state.transition(store, row.id, RequestStatus.EXPIRED, RequestStatus.RUNNING)
    # the race loser of pending → running is told False, not an error: the move itself is legal
    assert not request_state.transition(store, row.id, RequestStatus.PENDING, RequestStatus.RUNNING)
    assert request_state.get_request(store, row.id).status == RequestStatus.EXPIRED


def test_a_final_request_write_is_a_guarded_transition(tmp_path):
    store = Store(tmp_path / "state.db")
    row = _request(store)
    with pytest.raises(IllegalTransition, match="cannot go from pending to succeeded"):
        request_state.finish_request(store, row.id, RequestStatus.SUCCEEDED, {"ok": True})
    assert request_state.transition(store, row.id, RequestStatus.PENDING, RequestStatus.RUNNING)
    request_state.finish_request(store, row.id, RequestStatus.FAILED, {"ok": False})
    with pytest.raises(IllegalTransition, match="cannot go from failed to succeeded"):
        request_state.finish_request(store, row.id, RequestStatus.SUCCEEDED, {"ok": True})
    final = request_state.get_request(store, row.id)
    assert final.status == RequestStatus.FAILED and final.result == {"ok": False}


def test_the_machines_final_statuses():
    assert final_statuses(JobStatus) == {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.INTERRUPTED}
    assert RequestStatus.PENDING not in final_statuses(RequestStatus)
    assert allowed(Verification.VERIFIED, Verification.FAILED)  # a backup can be drilled again
    assert not allowed(Verification.VERIFIED, Verification.UNVERIFIED)
