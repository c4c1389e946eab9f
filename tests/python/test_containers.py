"""Jobs in containers, supervised by the host's wardend through a bind-mounted socket.

A simulated pod: `unshare --pid --mount --fork --mount-proc` with private tmpfs on /tmp and
/dev/shm and the socket at another path (/mnt/warden/warden.sock); its PID 1 is a shell that
outlives the job, so that what the job left inside can be looked at through /proc/PID/root.
And a real container runtime: systemd-nspawn over the Debian root the systemd tests cache.
"""

import hashlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import JOBS, ROOT, WARDENCTL, alive, package_env, sleepers, wait_gone

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                                reason="containers need root and unshare(1)")

GRACE = 1.0
POD_SOCKET = "/mnt/warden/warden.sock"


class Pod:
    """A process tree in its own PID and mount namespaces, running `argv` beside a PID 1 that
    stays until the pod is stopped. `binds`: (host dir, dir in the pod) mounted before the
    private /tmp hides the host's."""

    def __init__(self, daemon, argv, binds=(), env=None):
        # The source tree too, which the private /tmp would hide where it is checked out there.
        binds = [*binds, (ROOT, ROOT)]
        setup = ["mount -t tmpfs pod-mnt /mnt", "mkdir -p /mnt/warden /mnt/binds",
                 "mount --bind %s /mnt/warden" % os.path.dirname(daemon.socket)]
        for i, (host, _) in enumerate(binds):
            setup += ["mkdir /mnt/binds/%d" % i, "mount --bind %s /mnt/binds/%d" % (host, i)]
        setup += ["mount -t tmpfs pod-tmp /tmp", "mount -t tmpfs pod-shm /dev/shm",
                  "mkdir -p /tmp/ready"]
        for i, (_, inside) in enumerate(binds):
            setup += ["mkdir -p %s" % inside, "mount --bind /mnt/binds/%d %s" % (i, inside)]
        # PID 1 stays (sleep) while the job runs as its child.
        script = " && ".join(setup) + ' && { "$@" & } && exec sleep 3600'
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("WARDEN_")}
        full_env.update({"WARDEN_SOCKET": POD_SOCKET, "READY_DIR": "/tmp/ready", **package_env()})
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            ["unshare", "--pid", "--mount", "--fork", "--mount-proc", "--kill-child",
             "sh", "-c", script, "pod", *argv],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env)

    def ready(self, timeout=60):
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.stop()
            pytest.fail("the pod's job did not start:\n" + self.proc.stderr.read())
        return json.loads(line)

    def init(self):
        """PID 1 of the pod, in the host's numbering."""
        with open("/proc/%d/task/%d/children" % (self.proc.pid, self.proc.pid)) as f:
            return int(f.read().split()[0])

    def path(self, inside):
        """A path of the pod, seen from the host."""
        return "/proc/%d/root%s" % (self.init(), inside)

    def stop(self):
        self.proc.kill()
        self.proc.wait(10)


def python_job(script, *args):
    return [sys.executable, os.path.join(JOBS, script), *args]


def job_of(client, name):
    return next(j for j in client.status() if j["name"] == name)


def test_a_dataloader_job_in_a_pod_is_cleaned_inside_the_pod(wardend):
    pytest.importorskip("torch")
    pod = Pod(wardend, python_job("dataloader_job.py", "--grace", str(GRACE),
                                  "--segment", "pod_segment"))
    try:
        inside = pod.ready()
        client = wardend.client()
        job = job_of(client, "dataloader")
        main = job["main"]["pid"]
        workers = [w["pid"] for w in job["workers"]]
        assert len(workers) == 4 and all(alive(p) for p in workers)
        assert main != inside["main"], "the host numbers the pod's processes its own way"
        assert inside["status_main_pid"] == inside["main"], "the pod sees its own numbering"
        assert os.path.isdir(pod.path(inside["tempdir"]))
        assert os.path.exists(pod.path("/dev/shm/pod_segment"))
        assert not os.path.exists(inside["tempdir"]), "the pod's /tmp is its own"

        killed = time.monotonic()
        os.kill(main, signal.SIGKILL)
        left = wait_gone(workers, GRACE + 1)
        took = time.monotonic() - killed
        assert left == [], "workers alive %.1f s after the SIGKILL" % took
        print("pod: all 4 workers gone %.2f s after the SIGKILL" % took)
        status = wardend.wait_for_state(job["id"], "cleaned")
        assert status["reason"] == "failed"
        assert not os.path.exists(pod.path(inside["tempdir"]))
        assert not os.path.exists(pod.path("/dev/shm/pod_segment"))
        paths = {p["path"]: p["outcome"] for p in status["report"]["paths"]}
        assert paths == {inside["tempdir"]: "removed", "/dev/shm/pod_segment": "removed"}
        # Each process the cleanup found alive is named in the pod's numbering too.
        local = {p["pid"]: p.get("local_pid") for p in status["report"]["processes"]}
        assert sorted(local[w] for w in workers) == sorted(inside["workers"])
    finally:
        pod.stop()


def test_discovery_in_a_pod_reads_the_pods_own_mounts(wardend):
    """A job in a pod whose workers hold segments and a temp file in the pod's own /dev/shm and
    /tmp, none registered: they are found and removed there; a segment the pod had before the job
    and one held from the host are kept with their reasons."""
    pod = Pod(wardend, ["sh", "-c", 'head -c 4096 /dev/zero > /dev/shm/prior && exec "$@"', "job",
                        *python_job("discover_job.py", "prior")])
    try:
        made = pod.ready()
        outsider = os.open(pod.path("/dev/shm/" + made["shared"]), os.O_RDONLY)
        try:
            os.kill(job_of(wardend.client(), "discover")["main"]["pid"], signal.SIGKILL)
            status = wardend.wait_for_state(made["job"], "cleaned")
        finally:
            os.close(outsider)
        found = {d["path"]: d for d in status["report"].get("discovered", [])}
        for name in (made["held"], made["mapped"]):
            assert found["/dev/shm/" + name]["outcome"] == "removed", found
            assert not os.path.exists(pod.path("/dev/shm/" + name))
        assert found[made["tempfile"]]["outcome"] == "removed"
        assert not os.path.exists(pod.path(made["tempfile"]))
        assert found["/dev/shm/prior"]["detail"] == "existed before the job"
        assert found["/dev/shm/" + made["shared"]]["detail"].startswith("held by pid %d" % os.getpid())
        # What it made and closed in its own mounts, the host's watch cannot see (PROTOCOL.md).
        assert "/dev/shm/" + made["closed"] not in found
        assert os.path.exists(pod.path("/dev/shm/" + made["closed"]))
        local = {p.get("local_pid") for p in status["report"]["processes"]}
        assert set(made["workers"]) <= local, "the workers, in the pod's numbering"
    finally:
        pod.stop()


def host_sleeper():
    """A host process, and it should stay that way."""
    return subprocess.Popen(["sleep", "3600"])


@pytest.mark.parametrize("restart", [False, True])
def test_a_pod_naming_a_host_processes_pid_never_signals_it(wardend, restart):
    bystander = host_sleeper()
    pod = Pod(wardend, python_job("pod_job.py", "impostor", str(bystander.pid)))
    try:
        inside = pod.ready()
        assert inside["child"] == bystander.pid, "ns_last_pid gave the pod's child the host's pid"
        client = wardend.client()
        job = job_of(client, "pod-impostor")
        (worker,) = job["workers"]
        assert worker["pid"] != bystander.pid, "the bare pid was read in the pod's numbering"
        if restart:
            wardend.restart()
            client = wardend.client()
        client.cleanup(job["id"])
        wardend.wait_for_state(job["id"], "cleaned")
        assert wait_gone([worker["pid"]], 5) == [], "the pod's own process was ended"
        assert bystander.poll() is None, "the host process with that pid is untouched"
    finally:
        pod.stop()
        bystander.kill()
        bystander.wait()


def test_a_pod_is_told_what_it_named_wrong(wardend):
    pod = Pod(wardend, python_job("pod_job.py", "mistakes"))
    try:
        errors = pod.ready()["errors"]
        assert errors["pid"]["code"] == "no_such_process"
        assert "pass a pidfd" in errors["pid"]["message"]
        assert errors["path"]["code"] == "not_found"
        assert "/tmp/not/there" in errors["path"]["message"]
    finally:
        pod.stop()


def test_what_a_gone_pod_left_on_a_mount_that_outlives_it_is_removed(wardend):
    host_dir = tempfile.mkdtemp(prefix="warden-hostpath-", dir="/var/tmp")
    pod = Pod(wardend, python_job("pod_job.py", "outlived", "/tmp/data"),
              binds=[(host_dir, "/tmp/data")])
    try:
        pod.ready()
        assert os.path.exists(os.path.join(host_dir, "out", "nested", "part"))
        client = wardend.client()
        job = job_of(client, "pod-outlived")
        pod.stop()  # the whole pod: every process of the job is gone with it
        status = wardend.wait_for_state(job["id"], "cleaned")
        paths = {p["path"]: p["outcome"] for p in status["report"]["paths"]}
        assert paths == {"/tmp/data/out": "removed", "/tmp/scratch": "removed"}
        assert status["report"]["hooks"][0]["outcome"] == "succeeded"
        assert os.listdir(host_dir) == ["hook-ran"], "the mount kept nothing of the job but what " \
                                                     "its hook wrote there, in the pod's file tree"
        with open(os.path.join(host_dir, "hook-ran")) as f:
            assert f.read().strip() == "failed"
    finally:
        if pod.proc.poll() is None:
            pod.stop()
        shutil.rmtree(host_dir)


def test_a_stalled_pods_diagnose_command_sees_the_pods_pids(wardend):
    pod = Pod(wardend, python_job("pod_job.py", "stall"))
    try:
        inside = pod.ready()
        status = wardend.wait_for_state(inside["job"], "cleaned")
        assert status["reason"] == "stalled"
        command = status["report"]["diagnostics"]["command"]
        assert command["outcome"] == "succeeded", command
        # /proc/PID/comm: the interpreter's file name (python3, or a venv's python), at most 15.
        comm = os.path.basename(sys.executable)[:15]
        assert command["output"].split() == [str(inside["main"]), comm], \
            "{pid} is the pod's number for the main process, and the pod's /proc agrees"
    finally:
        pod.stop()


def debian_root():
    """The Debian 12 root the systemd container test caches (with libfmt9, all wardenctl needs)."""
    root = os.environ.get("WARDEN_NSPAWN_ROOT",
                          os.path.join(ROOT, "build", "container", "bookworm"))
    if not os.path.exists(root + "/usr/lib/x86_64-linux-gnu/libfmt.so.9"):
        pytest.skip("no cached Debian root at %s (the systemd container test makes it)" % root)
    return root


def nspawn_root():
    if shutil.which("systemd-nspawn") is None:
        pytest.skip("no systemd-nspawn (apt install systemd-container)")
    return debian_root()


def test_wardenctl_run_in_a_systemd_nspawn_container(wardend):
    root = nspawn_root()
    wardenctl = WARDENCTL
    script = ('/opt/%s run --name nspawn-job --grace 1 -- ' % os.path.basename(wardenctl) +
              '/bin/sh -c \'echo partial > "$TMPDIR/checkpoint"; exec sleep 3600\' & '
              'exec sleep 3600')
    container = subprocess.Popen(
        ["systemd-nspawn", "-D", root, "--read-only", "--register=no", "--keep-unit", "--quiet",
         "--bind=%s:/run/warden" % os.path.dirname(wardend.socket),
         "--bind-ro=%s:/opt" % os.path.dirname(wardenctl), "-E", "WARDEN_SOCKET=/run/warden/warden.sock",
         "/bin/sh", "-c", script],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        client = wardend.client()
        deadline = time.monotonic() + 60
        job = None
        while time.monotonic() < deadline:
            jobs = [j for j in client.status() if j["name"] == "nspawn-job" and j["workers"]
                    and j["paths"]]
            if jobs:
                job = jobs[0]
                break
            if container.poll() is not None:
                pytest.fail("the container ended:\n" + container.stdout.read())
            time.sleep(0.1)
        assert job is not None, "wardenctl run in the container never registered"
        (worker,) = [w["pid"] for w in job["workers"]]
        (tmpdir,) = [p["path"] for p in job["paths"]]
        with open("/proc/%d/status" % job["main"]["pid"]) as f:
            init = int(next(l for l in f if l.startswith("PPid:")).split()[1])
        in_container = "/proc/%d/root%s" % (init, tmpdir)
        deadline = time.monotonic() + 10
        while not os.path.exists(in_container + "/checkpoint") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert os.path.exists(in_container + "/checkpoint")
        assert not os.path.exists(tmpdir), "nspawn gives the container its own /tmp"

        os.kill(job["main"]["pid"], signal.SIGKILL)
        assert wait_gone([worker], GRACE + 1) == []
        status = wardend.wait_for_state(job["id"], "cleaned")
        assert status["reason"] == "failed"
        assert not os.path.exists(in_container)
        assert {p["path"]: p["outcome"] for p in status["report"]["paths"]} == {tmpdir: "removed"}
    finally:
        # SIGTERM, not SIGKILL: nspawn then ends its payload (SIGKILLed, it leaves the container's
        # `sleep 3600` running as the init of its namespace).
        container.terminate()
        try:
            container.wait(10)
        except subprocess.TimeoutExpired:
            container.kill()
            container.wait(10)


# Podman as Debian 12 ships it. On a hybrid cgroup host crun refuses to start containers, so runc
# runs them; and root here may not raise its limits, which podman would do for nofile and nproc.
PODMAN = ["podman", "--runtime", "runc"]
PODMAN_RUN = [*PODMAN, "run", "--rm", "--detach", "--network", "none",
              "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]


def podman_image():
    """The cached Debian root with wardenctl in /usr/local/bin, as a podman image; imported once
    per wardenctl build (the tag is its hash), older ones removed."""
    if shutil.which("podman") is None:
        pytest.skip("no podman (apt install podman runc)")
    if shutil.which("runc") is None:
        pytest.skip("no runc (apt install runc): crun refuses this host's hybrid cgroups")
    root = debian_root()
    wardenctl = WARDENCTL
    with open(wardenctl, "rb") as f:
        tag = hashlib.sha256(f.read()).hexdigest()[:16]
    image = "localhost/warden-test-job:" + tag
    if subprocess.run([*PODMAN, "image", "exists", image]).returncode == 0:
        return image
    old = subprocess.run([*PODMAN, "images", "--format", "{{.Repository}}:{{.Tag}}",
                          "localhost/warden-test-job"], stdout=subprocess.PIPE, text=True)
    for stale in old.stdout.split():
        subprocess.run([*PODMAN, "rmi", "--force", stale], stdout=subprocess.DEVNULL)
    tar = subprocess.Popen(
        ["tar", "-c", "-C", root, ".", "-C", os.path.dirname(wardenctl),
         "--transform", "s,^%s$,usr/local/bin/wardenctl," % os.path.basename(wardenctl),
         os.path.basename(wardenctl)], stdout=subprocess.PIPE)
    imported = subprocess.run([*PODMAN, "import", "--quiet", "-", image], stdin=tar.stdout,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tar.stdout.close()
    assert tar.wait() == 0 and imported.returncode == 0, imported.stderr
    return image


def test_a_job_in_a_podman_container_is_cleaned_in_the_containers_own_namespaces(wardend):
    """A real container runtime: the host's socket is all the container is given. SIGKILL of the
    job's main ends its worker and its setsid escapee, and removes its TMPDIR and the segment its
    worker held in the container's own /dev/shm (never registered: discovery finds it)."""
    image = podman_image()
    name = "warden-test-%d" % os.getpid()
    worker_mark, escapee_mark = "3600.%d1" % os.getpid(), "3600.%d2" % os.getpid()
    job_script = ('echo partial > "$TMPDIR/checkpoint"; '
                  'sleep %s 3>/dev/shm/podman-batch & '
                  'setsid sh -c "sleep %s & exec sleep 3600" & '
                  'exec sleep 3600' % (worker_mark, escapee_mark))
    container = ("wardenctl run --name podman-job --grace %s -- /bin/sh -c '%s' & exec sleep 3600"
                 % (GRACE, job_script))
    started = subprocess.run(
        [*PODMAN_RUN, "--name", name, "--volume", "%s:/run/warden/warden.sock" % wardend.socket,
         "--env", "WARDEN_SOCKET=/run/warden/warden.sock", image, "/bin/sh", "-c", container],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert started.returncode == 0, started.stderr
    try:
        init = int(subprocess.run([*PODMAN, "inspect", "--format", "{{.State.Pid}}", name],
                                  stdout=subprocess.PIPE, text=True, check=True).stdout)
        client = wardend.client()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            jobs = [j for j in client.status() if j["name"] == "podman-job" and j["paths"]]
            workers, escapees = sleepers(worker_mark), sleepers(escapee_mark)
            if jobs and workers and escapees:
                break
            time.sleep(0.05)
        assert jobs and workers and escapees, "the job in the container never got going"
        job = jobs[0]
        (tmpdir,) = [p["path"] for p in job["paths"]]
        inside = "/proc/%d/root" % init
        assert os.path.exists(inside + tmpdir + "/checkpoint")
        assert os.path.exists(inside + "/dev/shm/podman-batch")
        assert not os.path.exists("/dev/shm/podman-batch"), "the container has its own /dev/shm"

        os.kill(job["main"]["pid"], signal.SIGKILL)
        assert wait_gone(workers + escapees, GRACE + 1) == []
        status = wardend.wait_for_state(job["id"], "cleaned")
        assert status["reason"] == "failed"
        assert not os.path.exists(inside + tmpdir)
        assert not os.path.exists(inside + "/dev/shm/podman-batch")
        assert {p["path"]: p["outcome"] for p in status["report"]["paths"]} == {tmpdir: "removed"}
        discovered = {d["path"]: d["outcome"] for d in status["report"].get("discovered", [])}
        assert discovered == {"/dev/shm/podman-batch": "removed"}, discovered
        # The container's numbering beside wardend's, for what lived at the cleanup.
        local = {p["pid"]: p.get("local_pid") for p in status["report"]["processes"]}
        (command,) = [w["pid"] for w in job["workers"]]
        assert local[command] not in (None, command), local
    finally:
        subprocess.run([*PODMAN, "rm", "--force", "--time", "0", name],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
