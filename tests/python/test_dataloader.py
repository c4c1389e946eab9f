"""A real DataLoader(num_workers=4) job, SIGKILLed, with and without warden."""

import glob
import json
import os
import signal
import tempfile
import time

import pytest

from conftest import alive, cgroup_of, process_state, run_job, wait_gone

torch = pytest.importorskip("torch")

GRACE = 1.0


def start(*args, env=None):
    ready = tempfile.mkdtemp(prefix="warden-ready-")
    proc = run_job("dataloader_job.py", *args, env=dict(env or {}, READY_DIR=ready))
    line = proc.stdout.readline()
    if not line:
        proc.wait(10)
        pytest.fail("job did not start:\n" + proc.stderr.read())
    return proc, json.loads(line)


def segments(pids):
    return [path for pid in pids for path in glob.glob("/dev/shm/torch_%d_*" % pid)]


@pytest.mark.parametrize("sharing", ["file_descriptor", "file_system"])
def test_sigkilled_job_leaves_no_worker_tempdir_or_segment(wardend, sharing):
    proc, job = start("--sharing", sharing, "--grace", str(GRACE))
    pids = [job["main"]] + job["workers"]
    assert all(alive(p) for p in job["workers"])
    assert os.path.isdir(job["tempdir"])
    if sharing == "file_system":
        # The workers' prefetched batches reach /dev/shm soon after they start; wait for them
        # (generously: CI machines are shared and slow).
        deadline = time.monotonic() + 20
        while not segments(pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert segments(pids), "the file_system strategy put tensors in /dev/shm"

    killed = time.monotonic()
    os.kill(job["main"], signal.SIGKILL)
    proc.wait(10)
    left = wait_gone(job["workers"], GRACE + 1)
    took = time.monotonic() - killed
    assert left == [], "workers still alive %.1f s after SIGKILL" % took
    print("with warden: all 4 workers gone %.2f s after the SIGKILL" % took)

    client = wardend.client()
    status = wardend.wait_for_state(client.status()[0]["id"], "cleaned")
    assert status["reason"] == "failed"
    assert not os.path.exists(job["tempdir"])
    assert segments(pids) == []
    outcomes = {p["pid"]: p["outcome"] for p in status["report"]["processes"]}
    assert outcomes[job["workers"][1]] == "killed", "the worker ignoring SIGTERM needed SIGKILL"


def test_two_line_adoption_ends_workers_it_was_never_told_of(wardend_each_tracking):
    """The README's two lines, no worker_init_fn: the kernel's cgroup knows the workers; without
    one, each forked worker registered itself (the client's fork hook)."""
    daemon = wardend_each_tracking
    client = daemon.client()
    tracking = client.call({"op": "hello", "protocol": 1})["tracking"]
    proc, job = start("--two-line")
    status = client.status()[0]
    assert status["tracking"] == tracking
    registered = sorted(w["pid"] for w in status["workers"])
    # Where each worker was before the kill, and in which state (a zombie is in its cgroup until
    # reaped): a worker the report leaves out says which it was.
    where = {pid: (cgroup_of(pid), process_state(pid)) for pid in job["workers"]}
    if tracking == "cgroup":
        assert registered == [], "nobody told wardend of the workers"
        assert {c for c, _ in where.values()} == {status["cgroup"]}, "the workers are in the leaf"
    else:
        # Each fork registers itself from a thread of its own (a fork never waits on wardend).
        deadline = time.monotonic() + 10
        while registered != sorted(job["workers"]) and time.monotonic() < deadline:
            time.sleep(0.05)
            registered = sorted(w["pid"] for w in client.status()[0]["workers"])
        assert registered == sorted(job["workers"]), "each fork registered itself"

    killed = time.monotonic()
    os.kill(job["main"], signal.SIGKILL)
    proc.wait(10)
    grace = status["grace_s"]
    left = wait_gone(job["workers"], grace + 1)
    took = time.monotonic() - killed
    assert left == [], "workers still alive %.1f s after SIGKILL" % took
    print("tracking=%s: all 4 workers gone %.2f s after the SIGKILL" % (tracking, took))
    status = daemon.wait_for_state(status["id"], "cleaned")
    reported = {p["pid"]: p for p in status["report"]["processes"]}
    for pid in job["workers"]:
        assert pid in reported, "the report names every worker; before the kill they were in " + \
            "%s; the report: %s" % (where, status["report"]["processes"])
        assert reported[pid]["outcome"] in ("terminated", "killed")
    assert reported[job["workers"][1]]["outcome"] == "killed", "it ignored SIGTERM"
    assert not os.path.exists(job["tempdir"])


def test_without_warden_the_stuck_workers_outlive_the_job():
    """The contrast, measured in the same run: nothing ends the workers of a SIGKILLed job."""
    proc, job = start("--no-warden")
    os.kill(job["main"], signal.SIGKILL)
    proc.wait(10)
    watch = 8.0  # longer than DataLoader's 5 s orphan check, which a stuck worker never reaches
    left = wait_gone(job["workers"], watch)
    try:
        print("without warden: %d of 4 workers still alive %.0f s after the SIGKILL: %s"
              % (len(left), watch, left))
        assert job["workers"][0] in left, "the worker stuck in __getitem__ lives on"
    finally:
        for pid in left:
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("form", ["direct", "wrapped", "own"])
def test_each_worker_init_fn_form_registers_every_worker(wardend, form):
    """worker_init_fn=warden.torch.worker_init_fn, =warden.torch.worker_init_fn(my_init), and a
    function of the user's that calls register_worker() all register every worker."""
    proc = run_job("init_forms_job.py", form)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    seen = json.loads(out)
    assert len(seen["loader"]) == 2
    assert seen["registered"] == seen["loader"]


@pytest.mark.parametrize("wrong", ["my_init", 3.5, ["a"]])
def test_worker_init_fn_misuse_raises_at_once(wrong):
    import warden.torch
    with pytest.raises(TypeError, match="worker_init_fn"):
        warden.torch.worker_init_fn(wrong)


def test_file_system_batches_nobody_registered_go_with_the_job(wardend_each_tracking):
    """The README's two lines with torch's file_system strategy: no segment glob registered, the
    workers' prefetched batches sit in /dev/shm held by nobody once the main is SIGKILLed (it held
    them, and the workers let go when they sent them). wardend saw each worker make its segments,
    so the cleanup removes them, listed as discovered."""
    daemon = wardend_each_tracking
    client = daemon.client()
    if "fanotify" not in client.call({"op": "hello", "protocol": 1})["discover_note"]:
        pytest.skip("this wardend does not watch the roots (needs CAP_SYS_ADMIN)")
    proc, job = start("--two-line", "--sharing", "file_system")
    pids = [job["main"]] + job["workers"]
    deadline = time.monotonic() + 20
    while len(segments(pids)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    made = segments(pids)
    assert made, "the file_system strategy put batches in /dev/shm"

    os.kill(job["main"], signal.SIGKILL)
    proc.wait(10)
    status = daemon.wait_for_state(client.status()[0]["id"], "cleaned")
    assert segments(pids) == [], "segments outlived the job"
    discovered = {d["path"]: d for d in status["report"].get("discovered", [])}
    removed = [p for p in made if discovered.get(p, {}).get("outcome") == "removed"]
    assert removed, "the report names the segments it removed: %s" % discovered
    assert all(discovered[p]["kind"] == "shm" and discovered[p]["bytes"] > 0 for p in removed)
    assert status["report"]["reclaimed_bytes"]["shm"] >= sum(discovered[p]["bytes"] for p in removed)
