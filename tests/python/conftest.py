"""A real wardend per test, on a temporary socket; the warden package from client/python, or with
WARDEN_PYTHON=installed the one this interpreter has installed (pip, the .deb)."""

import os
import select
import signal
import subprocess
import sys
import tempfile
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SOURCE = os.path.join(ROOT, "client", "python")
INSTALLED = os.environ.get("WARDEN_PYTHON") == "installed"
if not INSTALLED:
    sys.path.insert(0, SOURCE)

import warden  # noqa: E402

if INSTALLED and os.path.abspath(warden.__file__).startswith(SOURCE + os.sep):
    raise RuntimeError("WARDEN_PYTHON=installed, but warden comes from the source tree: "
                       + warden.__file__)


def package_env():
    """What a job script's environment needs to import the same warden package as the tests."""
    return {} if INSTALLED else {"PYTHONPATH": SOURCE}

WARDEND = os.environ.get("WARDEND", os.path.join(ROOT, "build", "bin", "wardend"))
WARDENCTL = os.environ.get("WARDENCTL", os.path.join(ROOT, "build", "bin", "wardenctl"))
JOBS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "jobs")


class Detached:
    """A process started through a shell that exits at once, so that this test process is not
    among its ancestors (wardend refuses to supervise its own ancestors, and tests register this
    process as a job). Has the parts of Popen the tests use."""

    def __init__(self, argv, log_path, env):
        # A subshell (its parent, once the shell has gone) waits for it and writes to its log how
        # it ended: no test reaps wardend, and a crash must not go unseen.
        launch = subprocess.run(
            ["/bin/sh", "-c",
             'log=$1; shift; ("$@" >>"$log" 2>&1 </dev/null & w=$!; echo $w; exec >/dev/null; '
             'wait $w; echo "---- wardend $w ended with status $? ----" >>"$log") &',
             "sh", log_path, *argv], env=env, stdout=subprocess.PIPE, text=True, check=True)
        self.pid = int(launch.stdout)
        self._pidfd = os.pidfd_open(self.pid)
        self._log_path = log_path

    def status(self, timeout=5):
        """How it ended, as the shell says it (128 + N: signal N); None if that is not known."""
        mark = "---- wardend %d ended with status " % self.pid
        deadline = time.monotonic() + timeout
        while True:
            with open(self._log_path, errors="replace") as f:
                for line in f:
                    if line.startswith(mark):
                        return int(line[len(mark):].split()[0])
            if time.monotonic() > deadline:
                return None
            time.sleep(0.01)

    def poll(self):
        """None while it runs, else 0 (how it ended: status())."""
        ready, _, _ = select.select([self._pidfd], [], [], 0)
        return 0 if ready else None

    def send_signal(self, sig):
        signal.pidfd_send_signal(self._pidfd, sig)

    def wait(self, timeout=None):
        ready, _, _ = select.select([self._pidfd], [], [], timeout)
        if not ready:
            raise subprocess.TimeoutExpired("wardend", timeout)
        return 0


class Daemon:
    def __init__(self, directory, *args):
        self.dir = directory
        self.socket = os.path.join(directory, "warden.sock")
        self.log_path = os.path.join(directory, "wardend.log")
        self.args = args
        self._start("w")

    def restart(self):
        """Stops wardend (SIGTERM: its jobs run on) and starts it again on the same state."""
        self.stop()
        self._start("a")

    def _start(self, log_mode):
        env = {k: v for k, v in os.environ.items() if not k.startswith("WARDEN_")}
        open(self.log_path, log_mode).close()
        self.proc = Detached(
            [WARDEND, "--socket", self.socket, "--state-dir", os.path.join(self.dir, "state"),
             "--log-level", "debug", *self.args], self.log_path, env)
        deadline = time.monotonic() + 10  # generous: a loaded CI machine starts slowly
        while True:
            try:
                warden.Client(self.socket).close()
                return
            except warden.Unavailable:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("wardend did not start:\n" + self.log())
                time.sleep(0.01)

    def release_cgroups(self):
        """Gives the processes in this wardend's tracking cgroups back to the cgroups above and
        removes them: a test's wardend stops with jobs running."""
        try:
            with open(os.path.join(self.dir, "state", "instance")) as f:
                prefix = "warden-%s-" % f.read().strip()
        except FileNotFoundError:
            return
        mount = cgroup2_mount()
        if mount is None:
            return
        for top, dirs, _ in os.walk(mount, topdown=False):
            if not os.path.basename(top).startswith(prefix):
                continue
            parent = os.path.dirname(top)
            while os.path.basename(parent).startswith(prefix):
                parent = os.path.dirname(parent)
            with open(os.path.join(top, "cgroup.procs")) as f:
                pids = f.read().split()
            for pid in pids:
                try:
                    with open(os.path.join(parent, "cgroup.procs"), "w") as f:
                        f.write(pid)
                except ProcessLookupError:
                    pass
            os.rmdir(top)

    def client(self):
        return warden.Client(self.socket)

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
        # SIGTERM ends wardend with status 0; a test that killed it (SIGKILL) meant to.
        status = self.proc.status()
        if status not in (0, 128 + signal.SIGKILL):
            raise AssertionError("wardend did not end cleanly (shell status %s; 128 + N is signal "
                                 "N):\n%s" % (status, self.log()))

    def wait_for_state(self, job, state, timeout=30):
        """Asks until the job is in `state` (or the timeout passes)."""
        client = self.client()
        deadline = time.monotonic() + timeout
        while True:
            status = client.status(job)
            if status["state"] == state or time.monotonic() > deadline:
                return status
            time.sleep(0.01)


@pytest.fixture
def wardend(request, monkeypatch):
    yield from serve(request, monkeypatch)


@pytest.fixture(params=["auto", "scan"])
def wardend_each_tracking(request, monkeypatch):
    """A wardend with tracking cgroups (where this machine allows them), and one without."""
    yield from serve(request, monkeypatch, "--tracking", request.param)


def serve(request, monkeypatch, *args):
    directory = tempfile.mkdtemp(prefix="warden-py-")
    daemon = Daemon(directory, *args)
    monkeypatch.setenv("WARDEN_SOCKET", daemon.socket)
    monkeypatch.delenv("WARDEN_JOB", raising=False)
    yield daemon
    try:
        daemon.stop()  # fails the test where wardend did not end cleanly
    finally:
        daemon.release_cgroups()
        if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
            print("---- wardend log ----\n" + daemon.log())
        subprocess.run(["rm", "-rf", directory])


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, "rep_" + report.when, report)


def cgroup2_mount():
    """Where the cgroup v2 hierarchy is mounted, or None."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.startswith("cgroup2 "):
                return left.split()[4]
    return None


def cgroup_of(pid, hierarchy=""):
    """The process's cgroup in `hierarchy` ('' for v2, else a v1 controller name); None once it
    has exited."""
    try:
        with open("/proc/%d/cgroup" % pid) as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                if controllers == hierarchy or hierarchy in controllers.split(","):
                    return path
    except OSError:
        pass
    return None


def run_job(script, *args, env=None, **kwargs):
    """Starts a job script from tests/python/jobs with this interpreter and the warden package."""
    full_env = dict(os.environ)
    full_env.update(package_env())
    full_env.update(env or {})
    return subprocess.Popen([sys.executable, os.path.join(JOBS, script), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=full_env, start_new_session=True, **kwargs)


def process_state(pid):
    """The process's state letter in /proc/PID/stat ("S", "Z", ...); None once it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def alive(pid):
    """True while the process exists and is not a zombie."""
    return process_state(pid) not in (None, "Z", "X")


def wait_gone(pids, timeout):
    """Waits until none of `pids` is alive; returns those still alive at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in pids if alive(p)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.01)


def sleepers(marker):
    """Host pids of the processes running `sleep MARKER` (a marker unique to the test: a job's
    processes found from the host, wherever they live)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/cmdline" % entry, "rb") as f:
                    if f.read().split(b"\0")[:2] == [b"sleep", marker.encode()]:
                        found.append(int(entry))
            except OSError:
                pass
    return found
