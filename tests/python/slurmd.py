"""Running a Slurm script as slurmd runs it: as root, with `env -i` and only the variables slurmd
sets, wardend's socket found only in /etc/warden/wardenctl.conf, and syslog at a socket of the
test's. All of it in a private mount namespace (overlays on /etc and /dev, the test's syslog socket
bound on /dev/log), so that the host is untouched."""

import os
import shutil
import socket
import subprocess

BUILD = os.path.dirname(os.path.dirname(os.environ.get(
    "WARDEND", os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), "build", "bin", "wardend"))))
SLURM = os.path.join(BUILD, "contrib", "slurm")

CAN_RUN = os.geteuid() == 0 and shutil.which("unshare") is not None
WHY_NOT = "needs root and unshare (mount namespaces)"

_SCRIPT = """set -e
t=$1 sock=$2 program=$3
shift 3
mount -t overlay overlay -o lowerdir=/etc,upperdir=$t/etc-up,workdir=$t/etc-work /etc
mkdir -p /etc/warden
printf 'socket = "%s"\\n' "$sock" >/etc/warden/wardenctl.conf
mount -t overlay overlay -o lowerdir=/dev,upperdir=$t/dev-up,workdir=$t/dev-work /dev
touch /dev/log
mount --bind "$t/log.sock" /dev/log
set +e
env -i "$@" "$program"
"""


def run(tmp_path, wardend_socket, program, env=None, timeout=120):
    """Runs `program` (a path) as slurmd would, with `env` (a dict) as its whole environment.
    Returns the CompletedProcess and the lines it sent to syslog."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    log_socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    log_socket.bind(str(tmp_path / "log.sock"))
    log_socket.settimeout(0)
    for d in ("etc-up", "etc-work", "dev-up", "dev-work"):
        (tmp_path / d).mkdir()
    assignments = ["%s=%s" % kv for kv in (env or {}).items()]
    try:
        done = subprocess.run(["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
                               _SCRIPT, "sh", str(tmp_path), wardend_socket, program,
                               *assignments],
                              capture_output=True, text=True, timeout=timeout)
        lines = []
        while True:
            try:
                lines.append(log_socket.recv(65536).decode())
            except BlockingIOError:
                break
        return done, lines
    finally:
        log_socket.close()
