"""The Slurm epilog as slurmd runs it: as root, with `env -i` and only SLURM_JOB_ID, against a job
whose worker ignores SIGTERM. wardend's socket is not the default, so wardenctl must find it in
/etc/warden/wardenctl.conf; the outcome must reach syslog. Both are arranged in a private mount
namespace (overlays on /etc and /dev, a test syslog socket on /dev/log), so the host is untouched.
"""

import os
import subprocess
import time

import pytest

import slurmd
from conftest import alive

EPILOG = os.path.join(slurmd.SLURM, "epilog.sh")
GRACE = 2.0

pytestmark = pytest.mark.skipif(not slurmd.CAN_RUN, reason=slurmd.WHY_NOT)


def spawn_stubborn():
    """A worker that ignores SIGTERM (the ignored disposition survives the exec)."""
    return subprocess.Popen(["/bin/sh", "-c", "trap '' TERM; exec sleep 600"])


def test_epilog_without_environment_waits_for_the_stubborn_worker_and_logs(wardend, tmp_path):
    main = subprocess.Popen(["sleep", "600"])
    worker = spawn_stubborn()
    time.sleep(0.1)  # the trap is set before the exec
    client = wardend.client()
    job = client.register("slurm-step", main.pid, grace=GRACE, group="4711")["job"]
    client.add_process(job, worker.pid)

    started = time.monotonic()
    run, lines = slurmd.run(tmp_path, wardend.socket, EPILOG, {"SLURM_JOB_ID": "4711"})
    took = time.monotonic() - started
    main.wait(10)
    worker.wait(10)

    assert run.returncode == 0, run.stderr
    assert not alive(worker.pid)
    assert took >= GRACE, "returned before the grace period ran out: the worker ignored SIGTERM"
    assert any("warden-epilog" in l and "slurm job 4711: job %d slurm-step: cleaned" % job in l
               for l in lines), lines
    assert "slurm job 4711: job %d slurm-step: cleaned" % job in run.stderr
    status = client.status(job)
    assert status["state"] == "cleaned"
    outcomes = {p["pid"]: p["outcome"] for p in status["report"]["processes"]}
    assert outcomes[worker.pid] == "killed"
