"""A hung wardend (SIGSTOPped, standing for a stuck disk or a debugger) never stalls training."""

import json
import os
import select
import signal
import time

import pytest

from conftest import run_job

pytest.importorskip("torch")


class BeatJob:
    def __init__(self):
        self.proc = run_job("beat_job.py", stdin=__import__("subprocess").PIPE)
        self.info = self.ask(None)

    def ask(self, command, timeout=60):
        if command is not None:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.proc.kill()
            pytest.fail("beat_job.py did not answer %r:\n%s" % (command, self.proc.stderr.read()))
        return json.loads(line)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def test_beats_take_microseconds_while_wardend_is_stopped_and_supervision_resumes(wardend):
    job = BeatJob()
    try:
        healthy = job.ask("beat 1")
        os.kill(wardend.proc.pid, signal.SIGSTOP)
        try:
            stopped = job.ask("beat 5")
        finally:
            os.kill(wardend.proc.pid, signal.SIGCONT)
        print("beat() with wardend healthy: max %.3f ms, p99 %.3f ms over %d calls"
              % (healthy["max_ms"], healthy["p99_ms"], healthy["calls"]))
        print("beat() with wardend stopped 5 s: max %.3f ms, p99 %.3f ms over %d calls"
              % (stopped["max_ms"], stopped["p99_ms"], stopped["calls"]))
        # A call that waited on wardend would take its 1 s timeout (it once took 95 s). The 5 ms
        # bound holds on a quiet machine; where the shared cores alone make a healthy beat() take
        # longer (5.5 ms seen in an ASan CI run: this thread preempted), that same-run figure is
        # the floor.
        assert stopped["max_ms"] < max(5, healthy["max_ms"] * 1.5), \
            "a beat() call waited on the stopped wardend"

        regained = job.ask("regain")
        print("supervised again %.2f s after SIGCONT" % regained["after_s"])
        assert regained["supervised"]
        status = wardend.client().status(job.info["job"])
        assert status["state"] == "running", "wardend's own pause is no stall of the job"
        deadline = time.monotonic() + 5  # the next beat tells wardend how long it lasted
        while time.monotonic() < deadline:
            events = wardend.client().call({"op": "events", "job": job.info["job"]})["events"]
            told = [e for e in events if "could not reach wardend" in e.get("reason_detail", "")]
            if told:
                break
            job.ask("beat 0.2")
        assert told, "the job's history says it ran unsupervised"
        print("event:", told[0]["reason_detail"])

        os.kill(job.info["pid"], signal.SIGKILL)
        assert wardend.wait_for_state(job.info["job"], "cleaned")["reason"] == "failed"
    finally:
        job.kill()


def test_a_dataloader_epoch_is_as_fast_while_wardend_is_stopped(wardend):
    """Its workers register while wardend does not answer: they must not wait on it."""
    job = BeatJob()
    try:
        before = job.ask("epoch")["epoch_s"]
        os.kill(wardend.proc.pid, signal.SIGSTOP)
        try:
            stopped = job.ask("epoch")["epoch_s"]
        finally:
            os.kill(wardend.proc.pid, signal.SIGCONT)
        after = job.ask("epoch")["epoch_s"]
        healthy = (before + after) / 2
        print("epoch: %.2f s healthy (%.2f, %.2f), %.2f s with wardend stopped (%.2fx)"
              % (healthy, before, after, stopped, stopped / healthy))
        assert stopped <= healthy * 1.10
    finally:
        job.kill()
