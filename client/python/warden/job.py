"""warden.Job: registers the current process as a job for the length of a ``with`` block."""

import logging
import os
import tempfile
import threading
import time

from .client import Client
from .errors import NotFound, Unavailable, WardenError

log = logging.getLogger("warden")

_current = None  # the Job this process started most recently and has not ended
_fork_hook_installed = False


def _after_fork_in_child():
    """In a child forked from a job's process (a DataLoader worker, a multiprocessing process).

    The child is not the job's owner, and the parent's connection is not its to use. Where wardend
    tracks the job by scanning (no tracking cgroup), the child registers itself: once its parent
    has died, nothing else would tell wardend that it belongs to the job. Fail-open, with a short
    bound, so that a fork never waits long on wardend.
    """
    global _current
    job, _current = _current, None
    if job is None:
        return
    job._owner = False
    job._client = None
    job._beat_thread = None
    if job.tracking != "scan" or job.id is None or job._ended:
        return
    try:
        with Client(job._socket_path, timeout=1.0) as client:
            client.add_process(job.id, os.getpid())
    except (WardenError, OSError) as e:
        if job.strict:
            raise
        log.warning("warden: this forked process of job %s is not registered: %s", job.id, e)


def _install_fork_hook():
    global _fork_hook_installed
    if not _fork_hook_installed:
        os.register_at_fork(after_in_child=_after_fork_in_child)
        _fork_hook_installed = True


def current_job():
    """The active job of this process: the one a ``with warden.Job(...)`` started here, or, in a
    child (a DataLoader worker, a subprocess), the one named by WARDEN_JOB. None without either."""
    if _current is not None:
        return _current
    if os.environ.get("WARDEN_JOB"):
        return Job.attach()
    return None


class Job:
    """A job registered with wardend.

    Use it as a context manager: leaving the block normally ends the job ok (teardown semantics:
    whatever is left is swept and reported); leaving it by an exception ends it failed (everything
    registered is removed). If the process dies, wardend cleans up on its own.

    Fail-open: without a reachable wardend the job logs one warning and does nothing; with
    ``strict=True`` it raises instead. After a daemon restart it reconnects, and registers itself
    again (with everything it added) if the daemon no longer knows it.

    ``heartbeat`` (seconds, 0 for none) is the deadline; call :meth:`beat` from the training loop
    (cheap: at most one request per quarter of the deadline), or pass ``heartbeat_thread=True`` to
    beat from a background thread (which only catches death, not hangs).
    """

    def __init__(self, name=None, heartbeat=0.0, grace=5.0, diagnose=None,
                 kill_main_on_stall=False, strict=False, heartbeat_thread=False,
                 socket_path=None, group=None):
        self.name = name or os.path.basename(os.environ.get("_", "")) or "job"
        self.heartbeat = float(heartbeat)
        self.grace = float(grace)
        self.diagnose = diagnose
        self.kill_main_on_stall = kill_main_on_stall
        self.group = group  # None: the client takes it from SLURM_JOB_ID or TORCHELASTIC_RUN_ID
        self.strict = strict
        self.id = None
        self.tracking = None  # "cgroup" or "scan" once registered (see Client.register)
        self._socket_path = socket_path
        self._client = None
        self._registered = []  # (method name, args, kwargs) to replay after a daemon restart
        self._lock = threading.RLock()
        self._last_beat = 0.0
        self._warned = False
        self._ended = False
        self._owner = True  # False for a job attached from a child process
        self._beat_thread = None
        self._stop_beating = threading.Event()
        self._heartbeat_thread = heartbeat_thread

    # --- lifecycle ---------------------------------------------------------------------------

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        self.end(ok=exc_type is None)
        return False

    def start(self):
        """Registers the job (main process: this one) and exports WARDEN_JOB, WARDEN_SOCKET and
        WARDEN_INSTANCE."""
        global _current
        with self._lock:
            if not self._try(self._register):
                return self
            _current = self
            if self._heartbeat_thread and self.heartbeat > 0:
                self._beat_thread = threading.Thread(target=self._beat_forever, daemon=True,
                                                     name="warden-heartbeat")
                self._beat_thread.start()
        return self

    @classmethod
    def attach(cls, job=None, socket_path=None, strict=False):
        """The job another process registered (default: $WARDEN_JOB), to add resources to it."""
        self = cls(strict=strict, socket_path=socket_path or os.environ.get("WARDEN_SOCKET"))
        self.id = int(job if job is not None else os.environ["WARDEN_JOB"])
        self._owner = False
        self._try(self._connect)
        return self

    def end(self, ok=True):
        """Ends the job: ok (sweep leftovers) or failed (remove everything). Idempotent."""
        global _current
        with self._lock:
            if self._ended or not self._owner:
                return
            self._ended = True
            self._stop_beating.set()
            if _current is self:
                _current = None
            if self.id is not None:
                self._try(lambda: self._call("end_job", self.id, ok=ok))

    @property
    def active(self):
        """True while the job is registered with a reachable wardend."""
        return self.id is not None and self._client is not None and not self._ended

    # --- heartbeats --------------------------------------------------------------------------

    def beat(self):
        """Signals progress. Safe to call every batch: coalesced to a quarter of the deadline."""
        if self.heartbeat <= 0 or not self.active:
            return
        now = time.monotonic()
        if now - self._last_beat < self.heartbeat / 4:
            return
        self._last_beat = now
        self._try(lambda: self._call("heartbeat", self.id))

    def _beat_forever(self):
        while not self._stop_beating.wait(self.heartbeat / 4):
            self._last_beat = 0.0
            self.beat()

    # --- resources -----------------------------------------------------------------------------

    def add_process(self, pid, policy="always"):
        self._add("add_process", pid, policy=policy)

    def add_file(self, path, policy="always"):
        return self._add("add_file", os.path.abspath(path), policy=policy)

    def add_dir(self, path, policy="always"):
        return self._add("add_dir", os.path.abspath(path), policy=policy)

    def add_shm(self, name, policy="always"):
        return self._add("add_shm", name, policy=policy)

    def add_shm_glob(self, pattern, policy="always"):
        return self._add("add_shm_glob", pattern, policy=policy)

    def add_hook(self, argv, env=None, cwd=None, timeout=30.0, policy="always"):
        """A command run as you at cleanup: a list is argv, a string runs through /bin/sh."""
        if isinstance(argv, str):
            argv = ["/bin/sh", "-c", argv]
        self._add("add_hook", list(argv), env=env, cwd=cwd, timeout=timeout, policy=policy)

    def tempdir(self, prefix="warden-", policy="always", dir=None):
        """Creates a temporary directory that wardend removes when the job ends (any way)."""
        path = tempfile.mkdtemp(prefix="%s%s-" % (prefix, self.id or "x"), dir=dir)
        self.add_dir(path, policy=policy)
        return path

    def _add(self, method, *args, **kwargs):
        with self._lock:
            self._registered.append((method, args, kwargs))
            if self.id is None:
                return None
            return self._try(lambda: self._call(method, self.id, *args, **kwargs))

    # --- plumbing ------------------------------------------------------------------------------

    def _connect(self):
        self._client = Client(self._socket_path)
        self._socket_path = self._client.socket_path

    def _register(self):
        if self._client is None:
            self._connect()
        reply = self._client.register(
            self.name, os.getpid(), heartbeat=self.heartbeat, grace=self.grace,
            kill_main_on_stall=self.kill_main_on_stall, diagnose=self.diagnose, group=self.group)
        self.id = reply["job"]
        self.tracking = reply.get("tracking", "scan")
        if self.tracking == "scan":
            _install_fork_hook()
        self._last_beat = time.monotonic()
        os.environ["WARDEN_JOB"] = str(self.id)
        os.environ["WARDEN_SOCKET"] = self._socket_path
        # Marks this job's descendants, even those that escape (PROTOCOL.md, "Cookie").
        os.environ["WARDEN_INSTANCE"] = self._client.server.get("instance", "")
        for method, args, kwargs in self._registered:
            try:
                getattr(self._client, method)(self.id, *args, **kwargs)
            except WardenError as e:  # e.g. a worker that exited meanwhile
                log.info("warden: could not re-register %s%r: %s", method, args, e)
        return True

    def _call(self, method, *args, **kwargs):
        """Calls the client; after a lost connection, reconnects (with backoff) and resumes."""
        if self._client is None:
            self._connect()
        try:
            return getattr(self._client, method)(*args, **kwargs)
        except Unavailable:
            self._resume()
            args = (self.id,) + args[1:] if args else args
            return getattr(self._client, method)(*args, **kwargs)

    def _resume(self, attempts=8):
        delay = 0.05
        for attempt in range(attempts):
            try:
                self._connect()
                break
            except Unavailable:
                if attempt == attempts - 1:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        if not self._owner:
            return
        try:
            state = self._client.status(self.id)["state"]
        except NotFound:
            state = None
        if state != "running":
            log.warning("warden: wardend no longer knows job %s; registering it again", self.id)
            self._register()

    def _try(self, fn):
        """Runs fn; in fail-open mode turns a warden error into one warning and a no-op."""
        try:
            return fn()
        except WardenError as e:
            if self.strict:
                raise
            if isinstance(e, Unavailable):
                if not self._warned:
                    self._warned = True
                    log.warning("warden: %s; the job runs on without supervision", e)
                self._client = None
            else:
                log.warning("warden: %s: %s", e.code, e)
            return None
