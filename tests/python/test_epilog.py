"""The Slurm epilog as slurmd runs it: as root, with `env -i` and only SLURM_JOB_ID, against a job
whose worker ignores SIGTERM. wardend's socket is not the default, so wardenctl must find it in
/etc/warden/wardenctl.conf; the outcome must reach syslog. Both are arranged in a private mount
namespace (overlays on /etc and /dev, a test syslog socket on /dev/log), so the host is untouched.
"""

import os
import shutil
import socket
import subprocess
import time

import pytest

from conftest import ROOT, alive

BUILD = os.path.dirname(os.path.dirname(os.environ.get("WARDEND", os.path.join(ROOT, "build", "bin",
                                                                                 "wardend"))))
EPILOG = os.path.join(BUILD, "contrib", "slurm", "epilog.sh")
GRACE = 2.0

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                                reason="needs root and unshare (mount namespaces)")


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

    log_socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    log_socket.bind(str(tmp_path / "log.sock"))
    log_socket.settimeout(0)
    for d in ("etc-up", "etc-work", "dev-up", "dev-work"):
        (tmp_path / d).mkdir()
    script = """set -e
t=$1 sock=$2 epilog=$3
mount -t overlay overlay -o lowerdir=/etc,upperdir=$t/etc-up,workdir=$t/etc-work /etc
mkdir -p /etc/warden
printf 'socket = "%s"\\n' "$sock" >/etc/warden/wardenctl.conf
mount -t overlay overlay -o lowerdir=/dev,upperdir=$t/dev-up,workdir=$t/dev-work /dev
touch /dev/log
mount --bind "$t/log.sock" /dev/log
set +e
env -i SLURM_JOB_ID=4711 "$epilog"
"""
    started = time.monotonic()
    run = subprocess.run(["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
                          script, "sh", str(tmp_path), wardend.socket, EPILOG],
                         capture_output=True, text=True, timeout=120)
    took = time.monotonic() - started
    main.wait(10)
    worker.wait(10)

    assert run.returncode == 0, run.stderr
    assert not alive(worker.pid)
    assert took >= GRACE, "returned before the grace period ran out: the worker ignored SIGTERM"
    lines = []
    while True:
        try:
            lines.append(log_socket.recv(65536).decode())
        except BlockingIOError:
            break
    assert any("warden-epilog" in l and "slurm job 4711: job %d slurm-step: cleaned" % job in l
               for l in lines), lines
    assert "slurm job 4711: job %d slurm-step: cleaned" % job in run.stderr
    status = client.status(job)
    assert status["state"] == "cleaned"
    outcomes = {p["pid"]: p["outcome"] for p in status["report"]["processes"]}
    assert outcomes[worker.pid] == "killed"
