"""warden.Job's state machine against an in-memory wardend (Job(connect=...)): what it sends, when
it beats, and how it recovers when wardend goes away, comes back or forgets the job. The same
paths against a real wardend are in test_job.py and test_hung_wardend.py; these pin the order and
count of calls, which a real daemon's timing would make flaky."""

import os
import threading
import time

import pytest

import warden


class FakeWardend:
    """Jobs and the calls made on them, and a switch that makes wardend unreachable."""

    def __init__(self):
        self.lock = threading.Lock()
        self.reachable = True
        self.hang_after_next = False  # the next call is applied, then wardend stops answering
        self.jobs = {}  # id -> {"state", "name", "calls": [(op, args)]}
        self.registrations = 0
        self.beats = []  # (job, unsupervised)
        self.next_id = 1

    def connect(self, socket_path, timeout):
        self.check()
        return FakeConnection(self)

    def check(self):
        if not self.reachable:
            raise warden.Unavailable("the fake wardend is down")

    def forget(self):
        """As a wardend restarted without its state."""
        with self.lock:
            self.jobs.clear()

    def calls(self, job):
        with self.lock:
            return [op for op, _ in self.jobs[job]["calls"]]


class FakeConnection:
    socket_path = "/fake/warden.sock"
    server = {"instance": "fake-instance"}

    def __init__(self, wardend):
        self.w = wardend

    def settimeout(self, timeout):
        pass

    def close(self):
        pass

    def register(self, name, pid, heartbeat=0.0, grace=5.0, kill_main_on_stall=False,
                 diagnose=None, group=None, discover=None):
        self.w.check()
        with self.w.lock:
            job = self.w.next_id
            self.w.next_id += 1
            self.w.registrations += 1
            self.w.jobs[job] = {"state": "running", "name": name, "calls": []}
        return {"job": job, "tracking": "cgroup"}

    def _record(self, job, op, *args):
        self.w.check()
        with self.w.lock:
            if job not in self.w.jobs:
                raise warden.NotFound("no job %d" % job)
            self.w.jobs[job]["calls"].append((op, args))
            if self.w.hang_after_next:
                self.w.hang_after_next = False
                self.w.reachable = False
                hung = warden.Unavailable("the fake wardend took the request and hung")
                hung.request_sent = True
                raise hung

    def status(self, job=None):
        self.w.check()
        with self.w.lock:
            if job not in self.w.jobs:
                raise warden.NotFound("no job %s" % job)
            return {"id": job, "state": self.w.jobs[job]["state"]}

    def heartbeat(self, job, unsupervised=None):
        self._record(job, "heartbeat")
        with self.w.lock:
            self.w.beats.append((job, unsupervised))
        return 60.0

    def end_job(self, job, ok=True):
        self._record(job, "end_job", ok)
        with self.w.lock:
            self.w.jobs[job]["state"] = "cleaned" if ok else "cleaning"

    def add_process(self, job, pid, policy="always"):
        self._record(job, "add_process", pid)
        return {}

    def add_path(self, job, kind, value, policy="always"):
        self._record(job, "add_" + kind, value)
        return "/dev/shm/" + value if kind == "shm" else value

    def add_hook(self, job, argv, env=None, cwd=None, timeout=30.0, policy="always"):
        self._record(job, "add_hook", tuple(argv))
        return {}


@pytest.fixture
def fake(monkeypatch):
    for name in ("WARDEN_JOB", "WARDEN_SOCKET", "WARDEN_INSTANCE"):
        monkeypatch.delenv(name, raising=False)
    return FakeWardend()


def eventually(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_block_registers_adds_and_ends_ok_or_failed(fake):
    with warden.Job("ok", connect=fake.connect) as job:
        job.add_shm("seg")
        job.add_hook("echo done")
        assert os.environ["WARDEN_JOB"] == str(job.id)
        assert os.environ["WARDEN_INSTANCE"] == "fake-instance"
    assert fake.calls(job.id) == ["add_shm", "add_hook", "end_job"]
    assert fake.jobs[job.id]["calls"][-1] == ("end_job", (True,))

    with pytest.raises(RuntimeError):
        with warden.Job("failing", connect=fake.connect) as failed:
            raise RuntimeError("training blew up")
    assert fake.jobs[failed.id]["calls"][-1] == ("end_job", (False,))


def test_beats_are_sent_at_most_once_a_quarter_and_the_last_one_trails(fake):
    with warden.Job("beating", heartbeat=0.4, connect=fake.connect) as job:
        start = time.monotonic()
        while time.monotonic() - start < 0.25:
            job.beat()  # a training loop's every step
            time.sleep(0.001)
        assert eventually(lambda: len(fake.beats) >= 3, 1.0)
        time.sleep(0.25)  # no more beat() calls: nothing more is sent
        sent = len(fake.beats)
        time.sleep(0.25)
        assert len(fake.beats) == sent
    # The first at once, then one per 0.1 s quarter, the last trailing the loop's end.
    assert 3 <= sent <= 5, fake.beats


def test_a_job_started_while_wardend_is_down_registers_with_all_it_added_once_it_answers(fake):
    fake.reachable = False
    job = warden.Job("late", connect=fake.connect).start()
    try:
        assert job.id is None and not job.active
        job.add_dir("/tmp/late-scratch")
        job.add_shm_glob("late_*")
        fake.reachable = True
        assert eventually(lambda: job.active)
        assert fake.calls(job.id) == ["add_dir", "add_shm_glob"]
    finally:
        job.end()


def test_what_is_added_while_wardend_is_unreachable_is_sent_when_it_answers_again(fake):
    job = warden.Job("lost", heartbeat=0.4, connect=fake.connect).start()
    try:
        fake.reachable = False
        job.add_file("/tmp/lost-file")  # fails over to the background thread
        assert not job.active
        job.add_shm("lost-seg")  # queued while lost
        time.sleep(0.2)
        fake.reachable = True
        assert eventually(lambda: job.active)
        assert fake.registrations == 1, "wardend still knew the job: not registered again"
        assert [c for c in fake.calls(job.id) if c != "heartbeat"] == ["add_file", "add_shm"]
        # The first beat after says how long the job went unsupervised.
        assert eventually(lambda: any(u for _, u in fake.beats))
        assert [u for _, u in fake.beats if u][0] >= 0.2
    finally:
        job.end()


def test_a_call_wardend_took_before_it_hung_is_not_sent_again(fake):
    job = warden.Job("hung", connect=fake.connect).start()
    try:
        fake.hang_after_next = True
        job.add_hook("echo once")  # a hook registered twice would run twice
        assert not job.active
        fake.reachable = True
        assert eventually(lambda: job.active)
        assert fake.calls(job.id) == ["add_hook"]
    finally:
        job.end()


def test_a_wardend_that_forgot_the_job_gets_it_registered_again_with_everything(fake):
    job = warden.Job("forgotten", connect=fake.connect).start()
    try:
        first = job.id
        job.add_dir("/tmp/forgotten-scratch")
        fake.forget()
        job.add_shm("after")  # NotFound: the background thread registers it again
        assert eventually(lambda: job.id != first and job.active)
        assert fake.calls(job.id) == ["add_dir", "add_shm"]
        assert os.environ["WARDEN_JOB"] == str(job.id)
    finally:
        job.end()


def test_a_strict_job_raises_where_a_lenient_one_runs_on(fake):
    fake.reachable = False
    with pytest.raises(warden.Unavailable):
        warden.Job("strict", strict=True, connect=fake.connect).start()
    lenient = warden.Job("lenient", connect=fake.connect).start()
    lenient.end()
    assert lenient.id is None
