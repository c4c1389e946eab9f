"""The Python client's event history and live stream against a real wardend."""

import os
import signal
import subprocess
import threading
import time

import pytest

import warden
from conftest import serve


def sleeper():
    return subprocess.Popen(["sleep", "600"])


def test_follow_events_yields_each_state_change_once_in_order(wardend):
    client = wardend.client()
    main = sleeper()
    job = client.register_job("followed", main.pid, grace=0)
    seen = []
    ready = threading.Event()

    def follow():
        for event in client.follow_events(job=job):
            seen.append(event)
            ready.set()
            if event["state"] == "cleaned":
                return

    follower = threading.Thread(target=follow)
    follower.start()
    assert ready.wait(10), "the registration was not in the history"
    os.kill(main.pid, signal.SIGKILL)
    main.wait()
    follower.join(30)
    assert not follower.is_alive(), "no cleaned event came"
    assert [e["state"] for e in seen] == ["running", "cleaning", "cleaned"]
    assert all(e["job"] == job for e in seen)
    assert [e["seq"] for e in seen] == sorted({e["seq"] for e in seen})
    assert seen[-1]["report"]["processes"][0]["pid"] == main.pid


def test_events_reads_the_history_on_from_a_seq(wardend):
    client = wardend.client()
    first = sleeper()
    job = client.register_job("history", first.pid, grace=0)
    client.end_job(job, ok=True)
    wardend.wait_for_state(job, "cleaned")
    first.kill()
    first.wait()
    # `status` says cleaned as soon as it is; the event is on disk a write later.
    deadline = time.monotonic() + 10
    while len(client.events(job=job)) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    history = client.events(job=job)
    assert [e["state"] for e in history] == ["running", "cleaning", "cleaned"]
    assert history[1]["reason"] == "ended"
    after = client.events(job=job, after_seq=history[0]["seq"])
    assert [e["seq"] for e in after] == [e["seq"] for e in history[1:]]
    assert client.events(job=job, limit=1)[0]["state"] == "cleaned", "the latest without a start"


def test_follow_events_of_a_wardend_without_history_still_streams(request, monkeypatch):
    for daemon in serve(request, monkeypatch, "--no-durable"):
        client = daemon.client()
        with pytest.raises(warden.Unavailable) as refused:
            client.events()
        assert "history" in str(refused.value)
        got = []
        stream = client.follow_events()
        follower = threading.Thread(target=lambda: got.append(next(stream)))
        follower.start()
        main = sleeper()
        try:
            # The stream begins once the follower is subscribed: register until it sees one.
            jobs = []
            deadline = time.monotonic() + 10
            while follower.is_alive() and time.monotonic() < deadline:
                jobs.append(client.register_job("undurable", main.pid, grace=0))
                follower.join(0.05)
            assert got, "no event was streamed"
            assert got[0]["state"] == "running" and got[0]["job"] in jobs
        finally:
            main.kill()
            main.wait()
