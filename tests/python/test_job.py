"""warden.Job in real training scripts: clean end, exception, hang, no daemon, daemon restart."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import Daemon, alive, package_env, run_job

import warden

# The training scripts use torch; the tests of the client alone do not.
needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                 reason="needs torch (Debian's python3-torch)")


def first_line(proc):
    line = proc.stdout.readline()
    if not line:
        proc.wait(30)
        pytest.fail("job printed nothing:\n" + proc.stderr.read())
    return json.loads(line)


@needs_torch
def test_clean_run_ends_ok_with_no_leftovers(wardend):
    proc = run_job("train_job.py", "clean")
    info = first_line(proc)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "trained: total=4032" in out
    status = wardend.wait_for_state(info["job"], "cleaned")
    assert status["reason"] == "ended"
    report = status["report"]
    leftovers = [p for p in report["processes"] + report["paths"] if p.get("leftover")]
    # The tempdir is the job's to sweep: a clean end removes it, and says it was left over.
    assert [p["path"] for p in leftovers] == [info["tempdir"]]
    assert not os.path.exists(info["tempdir"])
    assert all(p["outcome"] == "already_gone" for p in report["processes"]), report["processes"]


@needs_torch
def test_exception_in_the_block_ends_the_job_failed(wardend):
    proc = run_job("train_job.py", "raise")
    info = first_line(proc)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "loss is NaN" in err
    status = wardend.wait_for_state(info["job"], "cleaned")
    assert status["reason"] == "failed"
    assert status["reason_detail"] == "the job reported failure"
    assert not os.path.exists(info["tempdir"])


@needs_torch
def test_hung_training_loop_is_stalled_and_cleaned_with_diagnostics(wardend):
    proc = run_job("train_job.py", "hang")
    info = first_line(proc)
    try:
        status = wardend.wait_for_state(info["job"], "cleaned")
        assert status["reason"] == "stalled"
        diagnostics = status["report"]["diagnostics"]
        roles = sorted(p["role"] for p in diagnostics["processes"])
        assert roles == ["main", "worker", "worker"]
        main = [p for p in diagnostics["processes"] if p["role"] == "main"][0]
        assert main["pid"] == info["pid"] and main["state"] in "SR"
        assert diagnostics["command"]["output"] == "diagnosing %d\n" % info["pid"]
        assert not os.path.exists(info["tempdir"])
        workers = [p["pid"] for p in status["report"]["processes"] if p["role"] == "worker"]
        assert workers and not any(alive(p) for p in workers)
        assert alive(info["pid"]), "the main process is spared unless the job asks"
    finally:
        proc.kill()
        proc.communicate()


@needs_torch
def test_without_wardend_training_runs_on_with_one_warning(tmp_path):
    proc = run_job("train_job.py", "clean", env={"WARDEN_SOCKET": str(tmp_path / "none.sock")})
    info = first_line(proc)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "trained: total=4032" in out
    warnings = [l for l in err.splitlines() if "warden" in l]
    assert len(warnings) == 1, err
    assert "the job runs on" in warnings[0]
    assert info["job"] is None


@needs_torch
def test_strict_mode_makes_a_missing_daemon_fatal(tmp_path):
    proc = run_job("train_job.py", "clean", "--strict",
                   env={"WARDEN_SOCKET": str(tmp_path / "none.sock")})
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "Unavailable" in err


def test_typed_errors(wardend):
    client = wardend.client()
    with pytest.raises(warden.NotFound) as e:
        client.heartbeat(424242)
    assert e.value.code == "not_found"
    job = client.register_job("typed", os.getpid())
    with pytest.raises(warden.BadRequest):
        client.add_file(job, "relative/path")
    with pytest.raises(warden.NotFound):
        client.add_file(job, "/tmp/no-such-file-for-warden")
    client.end_job(job)
    with pytest.raises(warden.InvalidState):
        client.end_job(job)
    with pytest.raises(warden.NoSuchProcess):
        client.register_job("ghost", 2 ** 22 + 12345)


def test_job_carries_on_after_a_daemon_restart(tmp_path, monkeypatch):
    daemon = Daemon(str(tmp_path))
    monkeypatch.setenv("WARDEN_SOCKET", daemon.socket)
    job = warden.Job("resumes", heartbeat=30, strict=True).start()
    try:
        scratch = job.tempdir()
        daemon.stop()
        daemon = Daemon(str(tmp_path))
        job._last_beat = 0  # force the next beat onto the wire
        job.beat()
        status = daemon.client().status(job.id)
        assert status["state"] == "running"
        assert [p["path"] for p in status["paths"]] == [scratch]
        assert os.environ["WARDEN_JOB"] == str(job.id)
        job.end(ok=False)
        daemon.wait_for_state(job.id, "cleaned")
        assert not os.path.exists(scratch)
    finally:
        daemon.stop()
        daemon.release_cgroups()


def test_job_takes_its_group_from_slurm_and_a_group_cleanup_ends_it(wardend):
    # A rank of Slurm job 777: a group cleanup (the epilog's) ends it, main process included.
    code = ("import sys, time, warden; job = warden.Job('rank0', strict=True).start(); "
            "print(job.id, flush=True); time.sleep(300)")
    env = dict(os.environ, SLURM_JOB_ID="777", **package_env())
    rank = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
    try:
        job = int(rank.stdout.readline())
        client = wardend.client()
        assert client.status(job)["group"] == "777"
        assert client.cleanup(group="777") == 1
        assert rank.wait(10) == -signal.SIGTERM
        assert wardend.wait_for_state(job, "cleaned")["reason"] == "failed"
    finally:
        rank.kill()


def test_coalesced_beats_advance_the_last_beat(wardend):
    """beat() sends its first beat at once and the last of each quarter of the deadline when the
    quarter ends, so "last beat" is never "never" for a job that beats."""
    def poll(read, until, timeout=5):
        deadline = time.monotonic() + timeout
        while True:
            value = read()
            if until(value) or time.monotonic() > deadline:
                return value
            time.sleep(0.01)

    client = wardend.client()
    with warden.Job("beats", heartbeat=2.0) as job:
        job.beat()
        last_beat = lambda: client.status(job.id).get("last_beat_unix_ms")  # noqa: E731
        first = poll(last_beat, lambda v: v is not None)
        assert first is not None, "the first beat was not sent at once"
        job.beat()  # within the quarter (0.5 s): coalesced
        job.beat()
        # A quarter (500 ms) later; wardend's wall-clock reading of a beat may move by a ms.
        later = poll(last_beat, lambda v: v >= first + 100)
        assert later >= first + 100, "the coalesced beats never reached wardend"
