"""warden.Job: registers the current process as a job for the length of a ``with`` block."""

from __future__ import annotations

import functools
import logging
import os
import tempfile
import threading
import time
from types import TracebackType
from typing import (Any, Callable, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple,
                    Type, TypeVar, Union)

from .client import _PATH_FIELDS, Client, Command, Message
from .errors import NotFound, Unavailable, WardenError

log = logging.getLogger("warden")

_current: Optional[Job] = None  # the Job this process started most recently and has not ended
_fork_hook_installed = False
_T = TypeVar("_T")
# A call to replay on a new connection: (Client method, arguments after the job id, keywords).
_Call = Tuple[str, Tuple[Any, ...], Dict[str, Any]]


class Connection(Protocol):
    """What a Job needs of a connection to wardend: :class:`warden.Client` is one; a test may
    give ``Job(connect=...)`` one of its own."""

    socket_path: str
    server: Message

    def settimeout(self, timeout: Optional[float]) -> None: ...
    def close(self) -> None: ...
    def register(self, name: str, pid: int, heartbeat: float = 0.0, grace: float = 5.0,
                 kill_main_on_stall: bool = False, diagnose: Optional[Command] = None,
                 group: Optional[str] = None, discover: Optional[str] = None) -> Message: ...
    def status(self, job: Optional[int] = None) -> Any: ...
    def heartbeat(self, job: int, unsupervised: Optional[float] = None) -> Optional[float]: ...
    def end_job(self, job: int, ok: bool = True) -> None: ...
    def add_process(self, job: int, pid: int, policy: str = "always") -> Message: ...
    def add_path(self, job: int, kind: str, value: str, policy: str = "always") -> str: ...
    def add_hook(self, job: int, argv: Sequence[str], env: Optional[Mapping[str, str]] = None,
                 cwd: Optional[str] = None, timeout: float = 30.0,
                 policy: str = "always") -> Message: ...


#: Opens a connection to wardend: (socket path or None for the default, timeout in seconds).
Connect = Callable[[Optional[str], float], Connection]


def _client(socket_path: Optional[str], timeout: float) -> Connection:
    return Client(socket_path, timeout=timeout)


def _after_fork_in_child() -> None:
    """In a child forked from a job's process (a DataLoader worker, a multiprocessing process).

    The child is not the job's owner, and the parent's connection is not its to use. Where wardend
    tracks the job by scanning (no tracking cgroup), the child registers itself: once its parent
    has died, nothing else would tell wardend that it belongs to the job. Fail-open, from a
    background thread (a strict job's: before the fork returns, bounded by its ``timeout``).
    """
    global _current
    job, _current = _current, None
    if job is None:
        return
    job._owner = False
    job._client = None
    job._beater = None
    job._supervisor = None
    if job.tracking != "scan" or job.id is None or job._ended:
        return
    if job.strict:
        _register_fork(job)
    else:  # never hold the fork on wardend
        threading.Thread(target=_register_fork, args=(job,), daemon=True,
                         name="warden-fork").start()


def _register_fork(job: Job) -> None:
    assert job.id is not None
    try:
        client = job._open(job.timeout)
        try:
            client.add_process(job.id, os.getpid())
        finally:
            client.close()
    except (WardenError, OSError) as e:
        if job.strict:
            raise
        log.warning("warden: this forked process of job %s is not registered: %s", job.id, e)


def _install_fork_hook() -> None:
    global _fork_hook_installed
    if not _fork_hook_installed:
        os.register_at_fork(after_in_child=_after_fork_in_child)
        _fork_hook_installed = True


def current_job() -> Optional[Job]:
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
    (it returns at once: a background thread sends at most one beat per quarter of the deadline),
    or pass ``heartbeat_thread=True`` to beat from that thread alone (which only catches death,
    not hangs).

    A hung wardend never stalls training: beats are sent off the calling thread, every other call
    gives up after ``timeout`` seconds (registration after ``start_timeout``) with one warning,
    and reconnecting, re-registering and sending what was added meanwhile happen in the
    background once wardend answers again.
    """

    def __init__(self, name: Optional[str] = None, heartbeat: float = 0.0, grace: float = 5.0,
                 diagnose: Optional[Command] = None, kill_main_on_stall: bool = False,
                 strict: bool = False, heartbeat_thread: bool = False,
                 socket_path: Optional[str] = None, group: Optional[str] = None,
                 timeout: float = 1.0, start_timeout: float = 5.0,
                 discover: Optional[str] = None, connect: Connect = _client) -> None:
        self.name = name or os.path.basename(os.environ.get("_", "")) or "job"
        self.heartbeat = float(heartbeat)
        self.grace = float(grace)
        self.diagnose = diagnose
        self.kill_main_on_stall = kill_main_on_stall
        self.group = group  # None: the client takes it from SLURM_JOB_ID or TORCHELASTIC_RUN_ID
        self.discover = discover  # None: wardend's setting (PROTOCOL.md, "Discovery")
        self.strict = strict
        self.timeout = float(timeout)
        self.start_timeout = float(start_timeout)
        self.id: Optional[int] = None
        self.tracking: Optional[str] = None  # "cgroup" or "scan" once registered (Client.register)
        self._socket_path = socket_path
        self._connect_to = connect
        self._client: Optional[Connection] = None
        self._registered: List[_Call] = []  # to replay after a daemon restart
        self._pending: List[_Call] = []  # added while wardend could not be reached, to send later
        self._lock = threading.RLock()  # serialises calls on _client and changes to the above
        self._last_beat = float("-inf")  # when a beat was last handed to the background thread
        self._trailing = False  # a beat() coalesced since then, to be sent when its quarter ends
        self._ended = False
        self._owner = True  # False for a job attached from a child process
        self._heartbeat_thread = heartbeat_thread
        # The background thread: beats (on its own connection, _beater), and reconnects.
        self._supervisor: Optional[threading.Thread] = None
        self._beater: Optional[Connection] = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._beat_due = False
        # time.monotonic() when wardend stopped answering; None: supervised
        self._lost_since: Optional[float] = None
        self._unsupervised: Optional[float] = None  # seconds unsupervised, told with the next beat

    # --- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Job:
        return self.start()

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.end(ok=exc_type is None)  # the exception, if any, goes on

    def start(self) -> Job:
        """Registers the job (main process: this one) and exports WARDEN_JOB, WARDEN_SOCKET and
        WARDEN_INSTANCE. Without wardend it runs on unsupervised (``strict``: raises), and the
        background thread registers it once wardend answers."""
        global _current
        with self._lock:
            try:
                self._register(self.start_timeout).settimeout(self.timeout)
            except Unavailable as e:
                if self.strict:
                    raise
                self._lose(e)
            except WardenError as e:
                if self.strict:
                    raise
                log.warning("warden: %s: %s; the job runs on without supervision", e.code, e)
                return self
            _current = self
            self._supervisor = threading.Thread(target=self._supervise, daemon=True,
                                                name="warden-supervision")
            self._supervisor.start()
        return self

    @classmethod
    def attach(cls, job: Optional[int] = None, socket_path: Optional[str] = None,
               strict: bool = False, timeout: float = 1.0) -> Job:
        """The job another process registered (default: $WARDEN_JOB), to add resources to it."""
        self = cls(strict=strict, socket_path=socket_path or os.environ.get("WARDEN_SOCKET"),
                   timeout=timeout)
        self.id = int(job if job is not None else os.environ["WARDEN_JOB"])
        self._owner = False
        self._try(lambda: self._connect(self.timeout))
        return self

    def end(self, ok: bool = True) -> None:
        """Ends the job: ok (sweep leftovers) or failed (remove everything). Idempotent."""
        global _current
        with self._lock:
            if self._ended or not self._owner:
                return
            self._ended = True
            self._stop.set()
            self._wake.set()
            if _current is self:
                _current = None
            if self.id is None:
                return
            if self._lost_since is not None and not self._regain():
                log.warning("warden: job %s ends while wardend does not answer; wardend will see "
                            "its main process exit and clean it as failed", self.id)
                return
            self._try(functools.partial(self._call, "end_job", self.id, ok=ok))

    @property
    def active(self) -> bool:
        """True while the job is registered with a reachable wardend."""
        return self.id is not None and self._lost_since is None and not self._ended

    # --- heartbeats --------------------------------------------------------------------------

    def beat(self) -> None:
        """Signals progress. Returns at once, whatever wardend is doing: the background thread
        sends the beat. The first is sent at once; later ones at most one per quarter of the
        deadline, the last of a quarter when it ends, so wardend's "last beat" trails the job's
        by a quarter at most."""
        if self.heartbeat <= 0 or self._ended or not self._owner:
            return
        now = time.monotonic()
        if now - self._last_beat < self.heartbeat / 4:
            if not self._trailing:
                self._trailing = True
                self._wake.set()  # the background thread times the end of the quarter
            return
        self._last_beat = now
        self._trailing = False
        self._beat_due = True
        self._wake.set()

    def _supervise(self) -> None:
        """The background thread: sends due beats, and while wardend does not answer, tries again
        every half second to reconnect (registering again if wardend forgot the job)."""
        quarter = self.heartbeat / 4
        period: Optional[float] = quarter if self._heartbeat_thread and self.heartbeat > 0 else None
        while not self._stop.is_set():
            timeout = 0.5 if self._lost_since is not None else period
            if self._trailing:
                left = max(0.0, self._last_beat + quarter - time.monotonic())
                timeout = left if timeout is None else min(timeout, left)
            self._wake.wait(timeout)
            self._wake.clear()
            if self._stop.is_set():
                return
            if self._lost_since is not None and not self._regain():
                continue
            if period is not None:
                self._beat_due = True
            if self._trailing and time.monotonic() - self._last_beat >= quarter:
                self._trailing = False
                self._last_beat = time.monotonic()
                self._beat_due = True
            if self._beat_due and self.heartbeat > 0:
                self._beat_due = False
                self._send_beat()

    def _send_beat(self) -> None:
        assert self.id is not None
        try:
            if self._beater is None:
                self._beater = self._open(self.timeout)
            self._beater.heartbeat(self.id, unsupervised=self._unsupervised)
            self._unsupervised = None
        except Unavailable as e:
            self._beater = None
            self._lose(e)
        except WardenError as e:
            if not self._ended:  # a beat that crossed end_job is of no interest
                log.warning("warden: heartbeat refused: %s: %s", e.code, e)

    def _lose(self, error: Exception) -> None:
        """wardend did not answer in time: the job runs on; the background thread takes over."""
        with self._lock:
            if self._lost_since is not None:
                return
            self._lost_since = time.monotonic()
            self._client = None
        log.warning("warden: %s; the job runs on, and supervision resumes in the background when "
                    "wardend answers", error)
        self._wake.set()

    def _regain(self) -> bool:
        """Tries once to reach wardend again; True once the job is supervised again. The lock is
        taken only once wardend has answered, so a call of the training thread never waits on
        an attempt."""
        try:
            client = self._open(self.timeout)
            state = None
            if self.id is not None:
                try:
                    state = client.status(self.id)["state"]
                except NotFound:
                    pass
        except (WardenError, OSError):
            return False
        with self._lock:
            if self._lost_since is None:
                client.close()
                return True  # another thread did it
            self._client = client
            try:
                if state == "running":
                    for method, args, kwargs in self._pending:
                        self._replay(method, args, kwargs)
                else:
                    if self.id is not None:
                        log.warning("warden: wardend no longer knows job %s; registering it again",
                                    self.id)
                    self._register(self.timeout)
            except (WardenError, OSError):
                self._client = None
                return False
            self._pending = []
            took = time.monotonic() - (self._lost_since or 0.0)
            self._lost_since = None
            self._unsupervised = took
        log.warning("warden: job %s is supervised again, after %.1f s without", self.id, took)
        self._beat_due = True
        return True

    # --- resources -----------------------------------------------------------------------------

    def add_process(self, pid: int, policy: str = "always") -> None:
        self._add("add_process", pid, policy=policy)

    def add_path(self, kind: str, value: str, policy: str = "always") -> Any:
        """A path of any kind ("file", "dir", "shm", "shm_glob", ...: PROTOCOL.md), cleaned when
        the job ends; a relative file system path is taken from the current directory."""
        if _PATH_FIELDS.get(kind, "path") == "path":
            value = os.path.abspath(value)
        return self._add("add_path", kind, value, policy=policy)

    def add_file(self, path: str, policy: str = "always") -> Any:
        return self.add_path("file", path, policy=policy)

    def add_dir(self, path: str, policy: str = "always") -> Any:
        return self.add_path("dir", path, policy=policy)

    def add_shm(self, name: str, policy: str = "always") -> Any:
        return self.add_path("shm", name, policy=policy)

    def add_shm_glob(self, pattern: str, policy: str = "always") -> Any:
        return self.add_path("shm_glob", pattern, policy=policy)

    def add_hook(self, argv: Command, env: Optional[Mapping[str, str]] = None,
                 cwd: Optional[str] = None, timeout: float = 30.0, policy: str = "always") -> None:
        """A command run as you at cleanup: a list is argv, a string runs through /bin/sh."""
        if isinstance(argv, str):
            argv = ["/bin/sh", "-c", argv]
        self._add("add_hook", list(argv), env=env, cwd=cwd, timeout=timeout, policy=policy)

    def tempdir(self, prefix: str = "warden-", policy: str = "always",
                dir: Optional[str] = None) -> str:
        """Creates a temporary directory that wardend removes when the job ends (any way)."""
        path = tempfile.mkdtemp(prefix="%s%s-" % (prefix, self.id or "x"), dir=dir)
        self.add_dir(path, policy=policy)
        return path

    def _add(self, method: str, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            self._registered.append((method, args, kwargs))
            if self.id is None:
                return None
            if self._lost_since is not None:
                if self._owner:
                    self._pending.append((method, args, kwargs))  # sent once wardend answers
                return None
            return self._try(functools.partial(self._call, method, self.id, *args, **kwargs),
                             unsent=(method, args, kwargs))

    # --- plumbing ------------------------------------------------------------------------------

    def _open(self, timeout: float) -> Connection:
        return self._connect_to(self._socket_path, timeout)

    def _connect(self, timeout: float) -> Connection:
        client = self._open(timeout)
        self._client = client
        self._socket_path = client.socket_path
        return client

    def _register(self, timeout: float) -> Connection:
        """Registers the job on the connection (a new one if there is none), with everything it
        had; returns the connection."""
        client = self._client if self._client is not None else self._connect(timeout)
        reply = client.register(
            self.name, os.getpid(), heartbeat=self.heartbeat, grace=self.grace,
            kill_main_on_stall=self.kill_main_on_stall, diagnose=self.diagnose, group=self.group,
            discover=self.discover)
        self.id = reply["job"]
        self.tracking = reply.get("tracking", "scan")
        if self.tracking == "scan":
            _install_fork_hook()
        os.environ["WARDEN_JOB"] = str(self.id)
        os.environ["WARDEN_SOCKET"] = client.socket_path
        # Marks this job's descendants, even those that escape (PROTOCOL.md, "Cookie").
        os.environ["WARDEN_INSTANCE"] = client.server.get("instance", "")
        for method, args, kwargs in self._registered:
            self._replay(method, args, kwargs)
        return client

    def _replay(self, method: str, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> None:
        try:
            getattr(self._client, method)(self.id, *args, **kwargs)
        except WardenError as e:  # e.g. a worker that exited meanwhile
            log.info("warden: could not register %s%r again: %s", method, args, e)

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Calls wardend, bounded by ``timeout``. A request a connection refused at once (wardend
        restarted) is sent once more on a new one; a wardend that does not answer is left to the
        background thread (an attached job, which has none, simply runs on)."""
        client = self._client if self._client is not None else self._connect(self.timeout)
        started = time.monotonic()
        try:
            return getattr(client, method)(*args, **kwargs)
        except Unavailable as e:
            if e.request_sent:
                raise  # wardend has it: sent again, a hook would run twice
            if time.monotonic() - started >= self.timeout / 2:
                raise  # it waited: wardend hangs, and another try would wait as long
            return getattr(client, method)(*args, **kwargs)

    def _try(self, fn: Callable[[], _T], unsent: Optional[_Call] = None) -> Optional[_T]:
        """Runs fn; in fail-open mode turns a warden error into one warning and a no-op.
        ``unsent``: the call fn makes, sent again once wardend answers if it never got it."""
        try:
            return fn()
        except Unavailable as e:
            if self.strict:
                raise
            if self._owner:
                if unsent is not None and not e.request_sent:
                    self._pending.append(unsent)
                self._lose(e)
            elif self._lost_since is None:
                self._lost_since = time.monotonic()
                self._client = None
                log.warning("warden: %s; this process runs on without registering with job %s",
                            e, self.id)
            return None
        except NotFound as e:
            if self.strict:
                raise
            if self._owner:
                # wardend forgot the job (restarted without its store): registered again, with
                # all it had, in the background.
                self._lose(e)
            else:
                log.warning("warden: %s: %s", e.code, e)
            return None
        except WardenError as e:
            if self.strict:
                raise
            log.warning("warden: %s: %s", e.code, e)
            return None
