"""A real single-node Slurm (Debian's slurm-wlm: munged, slurmctld, slurmd on loopback, all in a
temporary directory) with proctrack/cgroup, running a job that registers with wardend inside its
step (`wardenctl run` as the step's task).

Slurm's cgroup plugin is the host's to choose, not the test's: cgroup/v2 (what most sites run)
needs a host whose only hierarchy is cgroup v2; Slurm 22.05 refuses any other at start ("Hybrid
mode is not supported"), because the kernel lists every mounted v1 hierarchy in each process's
/proc/self/cgroup, in any container. cgroup/v1 needs the v1 freezer. Each is skipped, with that
reason, where the host cannot run it; this machine is hybrid, so it runs cgroup/v1 and skips v2.
"""

import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import WARDENCTL, alive, cgroup2_mount, cgroup_of, sleepers, wait_gone

SLURM_PROGRAMS = ("munged", "slurmctld", "slurmd", "srun", "scancel", "scontrol", "squeue",
                  "sstat")
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or any(shutil.which(p) is None for p in SLURM_PROGRAMS),
    reason="needs root and Debian's slurm-wlm and munge (scripts/install-deps test)")
GRACE = 1.0


def v1_hierarchies():
    """The kernel's mounted cgroup v1 hierarchies, as every process sees them listed."""
    with open("/proc/self/cgroup") as f:
        return [line.split(":")[1] for line in f if not line.startswith("0::")]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Slurm:
    """munged, slurmctld and slurmd in the foreground, configured in `directory`."""

    def __init__(self, directory, cgroup_plugin):
        self.dir = directory
        host = socket.gethostname()
        for d in ("state", "spool", "log", "munge"):
            os.makedirs(os.path.join(directory, d), mode=0o700)
        key = os.path.join(directory, "munge", "munge.key")
        with open(os.open(key, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
            f.write(os.urandom(1024))
        self.munge_socket = os.path.join(directory, "munge", "munge.sock")
        self.conf = os.path.join(directory, "slurm.conf")
        self.slurmd_log = os.path.join(directory, "log", "slurmd.log")
        with open(self.conf, "w") as f:
            f.write(f"""ClusterName=warden-test
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
CredType=cred/munge
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
StateSaveLocation={directory}/state
SlurmdSpoolDir={directory}/spool
SlurmctldPidFile={directory}/slurmctld.pid
SlurmdPidFile={directory}/slurmd.pid
SlurmctldLogFile={directory}/log/slurmctld.log
SlurmdLogFile={self.slurmd_log}
SlurmdDebug=debug
ProctrackType=proctrack/cgroup
TaskPlugin=task/cgroup
JobAcctGatherType=jobacct_gather/cgroup
SchedulerType=sched/builtin
SelectType=select/cons_tres
ReturnToService=2
MpiDefault=none
KillWait=2
NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
        # No resource is constrained: on a hybrid host cgroup v2 has no controller to give, and
        # what is tested is Slurm's process tracking with wardend's leaves, not its limits.
        with open(os.path.join(directory, "cgroup.conf"), "w") as f:
            f.write(f"CgroupPlugin={cgroup_plugin}\nConstrainCores=no\nConstrainRAMSpace=no\n"
                    "ConstrainDevices=no\n")
            if cgroup_plugin == "cgroup/v2":
                f.write("IgnoreSystemd=yes\n")  # no systemd scope for slurmstepd outside a unit
        self.env = {**os.environ, "SLURM_CONF": self.conf}
        self.daemons = []
        self._start(["munged", "--foreground", "--force", "--socket", self.munge_socket,
                     "--key-file", key, "--pid-file", os.path.join(directory, "munge", "pid"),
                     "--seed-file", os.path.join(directory, "munge", "seed"),
                     "--log-file", os.path.join(directory, "log", "munged.log")])
        self._wait_for(lambda: os.path.exists(self.munge_socket), "munged")
        self._start(["slurmctld", "-D", "-c"])
        self._start(["slurmd", "-D"])
        self._wait_for(self._node_up, "the node to be idle")

    def _start(self, argv):
        log = open(os.path.join(self.dir, "log", argv[0] + ".out"), "w")
        self.daemons.append(subprocess.Popen(argv, env=self.env, stdout=log,
                                             stderr=subprocess.STDOUT))

    def _wait_for(self, ready, what, timeout=30):
        deadline = time.monotonic() + timeout
        while not ready():
            for d in self.daemons:
                if d.poll() is not None:
                    pytest.fail("%s exited (%d) waiting for %s:\n%s" % (
                        d.args[0], d.returncode, what, self.logs()))
            if time.monotonic() > deadline:
                pytest.fail("no %s after %d s:\n%s" % (what, timeout, self.logs()))
            time.sleep(0.1)

    def _node_up(self):
        out = self.run("sinfo", "--noheader", "--format=%t", check=False).stdout.strip()
        return out in ("idle", "mix", "alloc")

    def run(self, *argv, check=True):
        return subprocess.run(argv, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, check=check, timeout=60)

    def logs(self):
        text = []
        for name in sorted(os.listdir(os.path.join(self.dir, "log"))):
            with open(os.path.join(self.dir, "log", name), errors="replace") as f:
                text.append("---- %s ----\n%s" % (name, "".join(f.readlines()[-30:])))
        return "\n".join(text)

    def stop(self):
        for d in reversed(self.daemons):
            d.terminate()
        for d in self.daemons:
            try:
                d.wait(15)
            except subprocess.TimeoutExpired:
                d.kill()
                d.wait()


@pytest.fixture(params=["cgroup/v2", "cgroup/v1"])
def slurm(request, tmp_path):
    plugin = request.param
    v1 = v1_hierarchies()
    if plugin == "cgroup/v2" and v1:
        pytest.skip("Slurm's cgroup/v2 needs a host with cgroup v2 alone; this kernel has v1 "
                    "hierarchies mounted (%s), which every process's /proc/self/cgroup lists, "
                    "in any container, and slurmd 22.05 stops at 'Hybrid mode is not supported'"
                    % ",".join(v1))
    if plugin == "cgroup/v1" and "freezer" not in v1:
        pytest.skip("Slurm's cgroup/v1 needs the v1 freezer hierarchy, which this host lacks")
    if cgroup2_mount() is None:
        pytest.skip("no cgroup v2 hierarchy for wardend's tracking leaves")
    # A short path: munged's socket lives beneath it.
    directory = os.path.join("/tmp", "warden-slurm-%d" % os.getpid())
    shutil.rmtree(directory, ignore_errors=True)
    cluster = Slurm(directory, plugin)
    cluster.plugin = plugin
    yield cluster
    cluster.stop()
    print(cluster.logs())  # pytest shows it where the test failed
    shutil.rmtree(directory, ignore_errors=True)


def start_step(slurm, wardend, name):
    """srun of `wardenctl run` whose command forks a worker and a setsid escapee and writes to its
    TMPDIR. Returns (srun, job id, the wardend job's status, worker pids, escapee pids)."""
    worker, escapee = "3600.%d1" % os.getpid(), "3600.%d2" % os.getpid()
    command = ('echo partial > "$TMPDIR/checkpoint"; sleep %s & '
               'setsid sh -c "sleep %s & exec sleep 3600" & exec sleep 3600' % (worker, escapee))
    srun = subprocess.Popen(
        ["srun", "--job-name", name, "--ntasks", "1", WARDENCTL, "run", "--name", name,
         "--grace", str(GRACE), "--", "/bin/sh", "-c", command],
        env={**slurm.env, "WARDEN_SOCKET": wardend.socket}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    client = wardend.client()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        jobs = [j for j in client.status() if j["name"] == name and j["paths"]]
        if jobs and sleepers(worker) and sleepers(escapee):
            break
        if srun.poll() is not None:
            pytest.fail("srun ended: %s\n%s" % (srun.stdout.read(), slurm.logs()))
        time.sleep(0.1)
    else:
        pytest.fail("the step's job never registered:\n" + slurm.logs())
    slurm_job = slurm.run("squeue", "--noheader", "--name", name, "--format=%i").stdout.strip()
    return srun, int(slurm_job), client.status(jobs[0]["id"]), sleepers(worker), sleepers(escapee)


def slurm_pids(slurm, job):
    """The pids Slurm's process tracking has in the job's step (scontrol listpids)."""
    out = slurm.run("scontrol", "listpids", "%d.0" % job).stdout.split("\n")[1:]
    return {int(line.split()[0]) for line in out if line.strip()}


def step_errors(slurm, job):
    """The errors slurmd and the step's slurmstepd logged about the job (but the banner scancel
    makes slurmstepd log as one)."""
    with open(slurm.slurmd_log) as f:
        return [l for l in f if "error:" in l and ("[%d." % job in l or "cgroup" in l)
                and "CANCELLED AT" not in l]


@pytest.mark.parametrize("end", ["kill -9 of the main", "scancel"])
def test_a_job_inside_a_slurm_step_is_cleaned_and_slurm_keeps_its_processes(slurm, wardend, end):
    srun, job, status, workers, escapees = start_step(slurm, wardend, "slurm-job")
    main = status["main"]["pid"]
    (tmpdir,) = [p["path"] for p in status["paths"]]

    # Slurm's tracking still has every process of the job: wardend's leaf sits inside the step.
    assert set([main] + workers + escapees) <= slurm_pids(slurm, job), slurm.logs()
    leaf = cgroup_of(main, "")
    if slurm.plugin == "cgroup/v2":
        step = "/job_%d/step_0/" % job
        assert step in leaf and leaf.rsplit("/", 1)[1].startswith("warden-"), leaf
    else:
        # Slurm's v1 freezer keeps the step; wardend's leaf is in the v2 hierarchy beside it.
        assert "/job_%d/step_0" % job in cgroup_of(main, "freezer")
        assert leaf.rsplit("/", 1)[1].startswith("warden-"), leaf
    assert status["tracking"] == "cgroup", status
    # And its accounting: the step's memory, read from its cgroup, which holds wardend's leaf.
    usage = slurm.run("sstat", "--noheader", "--parsable2", "--format=NTasks,MaxRSS",
                      "--jobs", "%d.0" % job).stdout.split()
    assert usage and usage[0].split("|")[0] == "1" and usage[0].split("|")[1] not in ("", "0"), usage

    if end == "scancel":
        slurm.run("scancel", str(job))
    else:
        os.kill(main, signal.SIGKILL)
    assert wait_gone(workers + escapees, GRACE + 5) == [], slurm.logs()
    cleaned = wardend.wait_for_state(status["id"], "cleaned")
    assert cleaned["state"] == "cleaned", cleaned
    assert not os.path.exists(tmpdir)
    srun.wait(30)

    # Slurm ends the step: its cgroups are removed and nothing it logged is an error.
    deadline = time.monotonic() + 30
    while slurm.run("squeue", "--noheader", "--jobs", str(job), check=False).stdout.strip():
        assert time.monotonic() < deadline, "the Slurm job never ended:\n" + slurm.logs()
        time.sleep(0.2)
    time.sleep(0.5)
    errors = step_errors(slurm, job)
    assert errors == [], "".join(errors)
    hierarchy = cgroup2_mount() if slurm.plugin == "cgroup/v2" else "/sys/fs/cgroup/freezer"
    leftovers = [d for d, _, _ in os.walk(hierarchy) if "/job_%d" % job in d]
    assert leftovers == [], leftovers
    assert not alive(main)
