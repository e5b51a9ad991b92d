"""``odeon job status|wait`` on the conditions the training operator writes (tests/e2e/ follows real
PyTorchJobs on a real API server)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import pytest

from odeon_job.commands import follow_job


def _job(*conditions: tuple[str, str], replicas: dict[str, Any] | None = None) -> dict[str, Any]:
    """A PyTorchJob whose conditions are (type, status) pairs, one second apart."""
    listed = [
        {
            "type": kind,
            "status": status,
            "reason": f"PyTorchJob{kind}",
            "message": f"job is {kind}",
            "lastTransitionTime": f"2026-11-24T10:00:0{i}Z",
        }
        for i, (kind, status) in enumerate(conditions)
    ]
    return {"status": {"conditions": listed, "replicaStatuses": replicas or {}}}


def _reader(*responses: dict[str, Any]) -> Callable[[str, str], dict[str, Any]]:
    """Reads that return ``responses`` in turn, then the last one again."""
    remaining = list(responses)

    def read(namespace: str, name: str) -> dict[str, Any]:
        assert (namespace, name) == ("ml", "train-1")
        return remaining.pop(0) if len(remaining) > 1 else remaining[0]

    return read


def test_wait_prints_each_change_once_and_succeeds(caplog: pytest.LogCaptureFixture) -> None:
    created = _job(("Created", "True"))
    running = _job(("Created", "True"), ("Running", "True"), replicas={"Master": {"active": 1}})
    done = _job(("Created", "True"), ("Running", "False"), ("Succeeded", "True"), replicas={"Master": {"succeeded": 1}})
    with caplog.at_level("INFO", logger="odeon"):
        result = follow_job.wait(
            _reader(created, created, running, running, done), "ml", "train-1", timeout=None, sleep=lambda seconds: None
        )
    assert result == follow_job.EXIT_SUCCEEDED
    assert caplog.messages == [
        "pytorchjob ml/train-1: 2026-11-24T10:00:00Z Created: PyTorchJobCreated (job is Created)",
        "pytorchjob ml/train-1: 2026-11-24T10:00:01Z Running: PyTorchJobRunning (job is Running)",
        "pytorchjob ml/train-1: pods: Master: 1 active",
        "pytorchjob ml/train-1: 2026-11-24T10:00:02Z Succeeded: PyTorchJobSucceeded (job is Succeeded)",
        "pytorchjob ml/train-1: pods: Master: 1 succeeded",
    ]


def test_wait_reports_a_failure_with_its_message(caplog: pytest.LogCaptureFixture) -> None:
    failed = _job(("Created", "True"), ("Restarting", "False"), ("Running", "False"), ("Failed", "True"))
    with caplog.at_level("INFO", logger="odeon"):
        assert follow_job.wait(_reader(failed), "ml", "train-1", timeout=None) == follow_job.EXIT_FAILED
    assert caplog.messages[-1] == "odeon: pytorchjob ml/train-1 failed: job is Failed"


def test_wait_gives_up_at_the_timeout(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    with caplog.at_level("INFO", logger="odeon"):
        result = follow_job.wait(
            _reader(_job(("Created", "True"), ("Running", "True"))),
            "ml",
            "train-1",
            timeout=30,
            interval=10,
            clock=lambda: now[0],
            sleep=sleep,
        )
    assert result == follow_job.EXIT_TIMEOUT and now[0] == 30
    assert caplog.messages[-1].startswith("odeon: pytorchjob ml/train-1: not finished after 0:00:30 (now ")


def test_status_lists_conditions_and_pods() -> None:
    job = _job(
        ("Created", "True"),
        ("Running", "True"),
        ("Restarting", "True"),
        replicas={"Master": {"active": 1}, "Worker": {"active": 2, "failed": 1}},
    )
    result, lines = follow_job.status(_reader(job), "ml", "train-1")
    assert result is None
    assert lines[0] == "pytorchjob ml/train-1" and lines[-1] == "  pods: Master: 1 active; Worker: 2 active, 1 failed"
    assert follow_job.state(job) is not None and follow_job.state(job).type == "Restarting"  # type: ignore[union-attr]
    assert follow_job.status(_reader(_job()), "ml", "train-1")[1][-1].endswith("is the training operator running?)")


@pytest.mark.parametrize(
    ("text", "seconds"), [("3600", 3600), ("90s", 90), ("45m", 2700), ("6h", 21600), ("1.5d", 129600)]
)
def test_durations(text: str, seconds: float) -> None:
    assert follow_job.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-5m", "0"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        follow_job.parse_duration(text)
