"""Discovery against a real wardend: a job SIGKILLed while its workers hold segments and temp files
it never registered. Those certainly the job's are removed; one made before the job and one held
by a process outside it are kept, each with its reason in the report."""

import json
import os
import signal

import pytest

from conftest import run_job, wait_gone


def report_of(daemon, job):
    status = daemon.wait_for_state(job, "cleaned")
    assert status["state"] == "cleaned", status
    return status["report"]


@pytest.fixture
def prior_segment():
    name = "warden-prior-%d" % os.getpid()
    with open("/dev/shm/" + name, "wb") as f:
        f.truncate(4096)
    yield name
    if os.path.exists("/dev/shm/" + name):
        os.unlink("/dev/shm/" + name)


def test_what_a_killed_job_held_but_never_registered_is_removed_unless_it_is_not_its(
        wardend_each_tracking, prior_segment):
    daemon = wardend_each_tracking
    job_process = run_job("discover_job.py", prior_segment)
    made = json.loads(job_process.stdout.readline())
    outsider = os.open("/dev/shm/" + made["shared"], os.O_RDONLY)  # a process outside the job
    try:
        os.kill(job_process.pid, signal.SIGKILL)
        job_process.wait(10)
        report = report_of(daemon, made["job"])
        assert not wait_gone(made["workers"], 10)
        discovered = {os.path.basename(d["path"]): d for d in report.get("discovered", [])}

        for name in (made["held"], made["mapped"]):
            assert discovered[name]["outcome"] == "removed", discovered
            assert discovered[name]["kind"] == "shm"
            assert not os.path.exists("/dev/shm/" + name)
        assert discovered[made["held"]]["bytes"] >= 1 << 20  # what it took, not its length
        assert discovered[made["mapped"]]["bytes"] >= 1 << 16
        temp = os.path.basename(made["tempfile"])
        assert discovered[temp]["outcome"] == "removed", discovered
        assert discovered[temp]["kind"] == "file"
        assert not os.path.exists(made["tempfile"])

        assert discovered[prior_segment]["outcome"] == "kept"
        assert discovered[prior_segment]["detail"] == "existed before the job"
        assert os.path.exists("/dev/shm/" + prior_segment)
        assert discovered[made["shared"]]["outcome"] == "kept"
        assert discovered[made["shared"]]["detail"].startswith("held by pid %d" % os.getpid())
        assert os.path.exists("/dev/shm/" + made["shared"])
        assert not report["paths"], "nothing was registered"
        client = daemon.client()
        assert client.status(made["job"])["discover"] == "reclaim"
        freed = [l for l in client.metrics().splitlines()
                 if l.startswith('warden_reclaimed_bytes_total{kind="shm"}')]
        assert freed and int(freed[0].split()[1]) >= (1 << 20) + (1 << 16), freed
    finally:
        os.close(outsider)
        for name in (made["shared"], made["closed"], made["closed_by_main"]):
            if os.path.exists("/dev/shm/" + name):
                os.unlink("/dev/shm/" + name)
        if os.path.exists(made["closed_tempfile"]):
            os.unlink(made["closed_tempfile"])


def test_a_job_in_report_mode_has_its_objects_listed_and_left(wardend, prior_segment):
    job_process = run_job("discover_job.py", prior_segment, "report")
    made = json.loads(job_process.stdout.readline())
    try:
        os.kill(job_process.pid, signal.SIGKILL)
        job_process.wait(10)
        report = report_of(wardend, made["job"])
        discovered = {os.path.basename(d["path"]): d for d in report["discovered"]}
        for name in (made["held"], made["mapped"], made["shared"]):
            assert discovered[name]["outcome"] == "kept", discovered
            assert discovered[name]["detail"] == "discover = report"
            assert os.path.exists("/dev/shm/" + name)
    finally:
        for name in (made["held"], made["mapped"], made["shared"], made["closed"],
                     made["closed_by_main"]):
            if os.path.exists("/dev/shm/" + name):
                os.unlink("/dev/shm/" + name)
        for path in (made["tempfile"], made["closed_tempfile"]):
            if os.path.exists(path):
                os.unlink(path)


def watching(daemon):
    return "fanotify" in daemon.client().call({"op": "hello"})["discover_note"]


def test_what_a_job_made_and_closed_before_it_died_is_removed_where_the_roots_are_watched(
        wardend_each_tracking, prior_segment):
    """No descriptor, no mapping: only the kernel's word on who made it names it the job's. A root
    wardend has it (fanotify); one that has not says so in hello, and leaves them."""
    daemon = wardend_each_tracking
    job_process = run_job("discover_job.py", prior_segment)
    made = json.loads(job_process.stdout.readline())
    closed = ["/dev/shm/" + made["closed"], made["closed_tempfile"],
              "/dev/shm/" + made["closed_by_main"]]
    try:
        os.kill(job_process.pid, signal.SIGKILL)
        job_process.wait(10)
        report = report_of(daemon, made["job"])
        discovered = {d["path"]: d for d in report.get("discovered", [])}
        if not watching(daemon):
            assert "not seen" in daemon.client().call({"op": "hello"})["discover_note"]
            assert all(os.path.exists(p) and p not in discovered for p in closed)
            return
        for path in closed:
            assert discovered[path]["outcome"] == "removed", discovered
            assert not os.path.exists(path)
        assert discovered["/dev/shm/" + made["closed"]]["bytes"] >= 1 << 16
        assert discovered[made["closed_tempfile"]]["kind"] == "file"
        # What the job made and still held is listed once, not once per way it was found.
        assert len([p for p in discovered if p.endswith(made["held"])]) == 1
    finally:
        for path in closed:
            if os.path.exists(path):
                os.unlink(path)
        if os.path.exists("/dev/shm/" + made["shared"]):
            os.unlink("/dev/shm/" + made["shared"])


def test_hello_says_what_discovery_sees(wardend):
    hello = wardend.client().call({"op": "hello"})
    assert hello["discover"] == "reclaim"
    if os.geteuid() == 0:
        assert "fanotify" in hello["discover_note"]
        assert "/dev/shm" in hello["discover_note"]
    else:
        assert "created and closed before it died is not seen" in hello["discover_note"]
