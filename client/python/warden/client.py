"""warden.Client: one connection to wardend, speaking the NDJSON protocol of proto/PROTOCOL.md."""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Union

from .errors import Unavailable, error_for

#: A request or a reply: a JSON object, as PROTOCOL.md describes each.
Message = Dict[str, Any]
#: A command: a list is its argv, a string runs through /bin/sh.
Command = Union[str, Sequence[str]]

PROTOCOL_VERSION = 1
SYSTEM_SOCKET = "/run/warden/warden.sock"


# The request member that carries each kind of path where it is not "path" (PROTOCOL.md): a kind
# wardend adds later is reached through add_path() without a change here.
_PATH_FIELDS = {"shm": "name", "shm_glob": "pattern"}


def user_socket_path() -> str:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "warden", "warden.sock")
    return "/tmp/warden-%d/warden.sock" % os.getuid()


def default_socket_path() -> str:
    """$WARDEN_SOCKET, else the system socket if it exists, else the per-user one."""
    env = os.environ.get("WARDEN_SOCKET")
    if env:
        return env
    if os.path.exists(SYSTEM_SOCKET):
        return SYSTEM_SOCKET
    return user_socket_path()


class Client:
    """A blocking connection to wardend. Thread-safe: calls are serialised.

    Every method raises a :class:`warden.WardenError` subclass: the daemon's error code for a
    refused request, or :class:`warden.Unavailable` when wardend cannot be reached.
    """

    def __init__(self, socket_path: Optional[str] = None, timeout: Optional[float] = 10.0) -> None:
        self.socket_path = socket_path or default_socket_path()
        self._timeout = timeout
        self._lock = threading.Lock()
        self._next_id = 1
        self._sock: Optional[socket.socket] = None
        self._buffer = b""
        self.server = self.call({"op": "hello", "protocol": PROTOCOL_VERSION, "client": "warden-python"})

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self._timeout)
        try:
            sock.connect(self.socket_path)
        except OSError as e:
            sock.close()
            raise Unavailable("cannot connect to %s: %s (is wardend running? set WARDEN_SOCKET)"
                              % (self.socket_path, e.strerror or e)) from None
        # Only root's wardend or one's own is trusted with this process's pids and paths.
        _, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                        struct.calcsize("3i")))
        if uid not in (0, os.geteuid()):
            sock.close()
            raise Unavailable("the process listening on %s runs as uid %d, neither root nor you: "
                              "it is not your wardend (another user may have squatted the path); "
                              "refusing to talk to it" % (self.socket_path, uid))
        self._sock = sock
        self._buffer = b""
        return sock

    def settimeout(self, timeout: Optional[float]) -> None:
        """How long each later call may wait on wardend before it raises Unavailable."""
        with self._lock:
            self._timeout = timeout
            if self._sock is not None:
                self._sock.settimeout(timeout)

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, request: Mapping[str, Any], pidfd: Optional[int] = None) -> Message:
        """Sends one request (a dict with "op") and returns the successful reply as a dict.
        ``pidfd``: a descriptor passed along with it (SCM_RIGHTS)."""
        with self._lock:
            sock = self._sock if self._sock is not None else self._connect()
            request_id = self._next_id
            self._next_id += 1
            line = json.dumps(dict(request, id=request_id), separators=(",", ":")) + "\n"
            sent = False
            try:
                data = line.encode()
                if pidfd is not None:
                    data = data[socket.send_fds(sock, [data], [pidfd]):]
                sock.sendall(data)
                sent = True
                reply: Message = json.loads(self._read_line())
            except (OSError, ValueError) as e:
                sock.close()
                self._sock = None
                lost = Unavailable("lost the connection to wardend on %s: %s"
                                   % (self.socket_path, e))
                lost.request_sent = sent
                raise lost from None
        if reply.get("id") is None and not reply.get("ok"):
            # wardend closing this connection (idle, over a limit); the request was not read.
            self.close()
            raise Unavailable("wardend closed the connection: %s"
                              % (reply.get("error") or {}).get("message", "no reason given"))
        if reply.get("id") != request_id:
            raise Unavailable("wardend answered out of order")
        if reply.get("ok"):
            return reply
        error = reply.get("error") or {}
        raise error_for(error.get("code", "internal"), error.get("message", "request refused"))

    def _read_line(self) -> str:
        if self._sock is None:
            raise OSError("not connected")
        while b"\n" not in self._buffer:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise OSError("wardend closed the connection")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    # --- one method per operation ---------------------------------------------------------------

    def register_job(self, name: str, pid: int, heartbeat: float = 0.0, grace: float = 5.0,
                     kill_main_on_stall: bool = False, diagnose: Optional[Command] = None,
                     group: Optional[str] = None, discover: Optional[str] = None) -> int:
        """Registers a job and returns its id."""
        job: int = self.register(name, pid, heartbeat, grace, kill_main_on_stall, diagnose, group,
                                 discover)["job"]
        return job

    def register(self, name: str, pid: int, heartbeat: float = 0.0, grace: float = 5.0,
                 kill_main_on_stall: bool = False, diagnose: Optional[Command] = None,
                 group: Optional[str] = None, discover: Optional[str] = None) -> Message:
        """Registers a job and returns the whole reply: ``job`` (its id) and ``tracking``
        (``"cgroup"``: the kernel keeps every process it forks; ``"scan"``: wardend finds them at
        cleanup, so forks should register themselves). ``discover``: what cleanup does with what
        its processes held but it never registered, "reclaim", "report" or "off" (None:
        wardend's setting)."""
        request: Message = {"op": "register_job", "name": name, "pid": pid,
                            "heartbeat_s": heartbeat, "grace_s": grace,
                            "kill_main_on_stall": kill_main_on_stall}
        if discover:
            request["discover"] = discover
        if diagnose:
            request["diagnose"] = _command(diagnose)
        # The cluster job this belongs to, so that a scheduler's epilog can clean all of it.
        group = group or os.environ.get("SLURM_JOB_ID") or os.environ.get("TORCHELASTIC_RUN_ID")
        if group:
            request["group"] = group
        return self._call_naming(request, pid)

    def cleanup(self, job: Optional[int] = None, group: Optional[str] = None) -> List[int]:
        """Clean a job, or every job of a group, now (as failed, main process included)."""
        request: Message = {"op": "cleanup"}
        if job is not None:
            request["job"] = job
        if group is not None:
            request["group"] = group
        jobs: List[int] = self.call(request)["jobs"]
        return jobs

    def add_process(self, job: int, pid: int, policy: str = "always") -> Message:
        return self._call_naming({"op": "add_process", "job": job, "pid": pid, "policy": policy}, pid)

    def _call_naming(self, request: Message, pid: int) -> Message:
        """Sends a request that names process ``pid`` with a pidfd of it: in a container a bare
        pid is not wardend's numbering. This process itself is known by its connection."""
        if pid == os.getpid():
            return self.call(request)
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:  # gone: wardend's answer to the bare pid says so
            return self.call(request)
        try:
            return self.call(dict(request, pidfd=True), pidfd=pidfd)
        finally:
            os.close(pidfd)

    def add_path(self, job: int, kind: str, value: str, policy: str = "always") -> str:
        """Registers a path of any kind ("file", "dir", "shm", "shm_glob", ...: PROTOCOL.md) and
        returns it as wardend canonicalised it (a pattern as given)."""
        field = _PATH_FIELDS.get(kind, "path")
        reply = self.call({"op": "add_" + kind, "job": job, field: value, "policy": policy})
        added: str = reply["pattern" if field == "pattern" else "path"]
        return added

    def add_file(self, job: int, path: str, policy: str = "always") -> str:
        return self.add_path(job, "file", path, policy)

    def add_dir(self, job: int, path: str, policy: str = "always") -> str:
        return self.add_path(job, "dir", path, policy)

    def add_shm(self, job: int, name: str, policy: str = "always") -> str:
        return self.add_path(job, "shm", name, policy)

    def add_shm_glob(self, job: int, pattern: str, policy: str = "always") -> str:
        return self.add_path(job, "shm_glob", pattern, policy)

    def add_hook(self, job: int, argv: Sequence[str], env: Optional[Mapping[str, str]] = None,
                 cwd: Optional[str] = None, timeout: float = 30.0,
                 policy: str = "always") -> Message:
        hook: Message = {"argv": list(argv), "timeout_s": timeout}
        if env:
            hook["env"] = dict(env)
        if cwd:
            hook["cwd"] = cwd
        return self.call({"op": "add_hook", "job": job, "hook": hook, "policy": policy})

    def heartbeat(self, job: int, unsupervised: Optional[float] = None) -> Optional[float]:
        """``unsupervised``: on the first beat after this client could not reach wardend, how
        many seconds that lasted (the job's history records it)."""
        request: Message = {"op": "heartbeat", "job": job}
        if unsupervised:
            request["unsupervised_s"] = unsupervised
        left: Optional[float] = self.call(request).get("deadline_in_s")
        return left

    def end_job(self, job: int, ok: bool = True) -> None:
        self.call({"op": "end_job", "job": job, "outcome": "ok" if ok else "failed"})

    def status(self, job: Optional[int] = None) -> Any:
        """The job's status (a dict), or without ``job`` a list of every job's visible to the
        caller."""
        request: Message = {"op": "status"}
        if job is not None:
            request["job"] = job
            return self.call(request)["jobs"][0]
        return self.call(request)["jobs"]

    def gpus(self) -> List[Message]:
        """The node's GPUs, each with the processes holding it and the job each belongs to."""
        gpus: List[Message] = self.call({"op": "gpus"})["gpus"]
        return gpus

    def metrics(self) -> str:
        """wardend's metrics in the Prometheus text format."""
        text: str = self.call({"op": "metrics"})["text"]
        return text

    def events(self, job: Optional[int] = None, since: Optional[float] = None,
               after_seq: Optional[int] = None, limit: int = 100) -> List[Message]:
        """The history of the caller's jobs (every job's for root), oldest first: one dict per
        state change ("seq", "unix_ms", "job", "name", "state", and the "report" once cleaned).
        ``since``: a Unix time in seconds; ``after_seq``: the last "seq" already seen."""
        events: List[Message] = self.call(_events_request(job, since, after_seq, limit))["events"]
        return events

    def follow_events(self, job: Optional[int] = None,
                      after_seq: Optional[int] = None) -> Iterator[Message]:
        """Yields the caller's events as they are written, each once and in "seq" order: first
        those after ``after_seq`` (the latest 100 without it), then each new one until the
        generator is closed. It has a connection of its own (a followed connection serves
        nothing else); wardend's closing it raises :class:`warden.Unavailable`."""
        stream = Client(self.socket_path, timeout=self._timeout)
        try:
            history = stream.call(dict(_events_request(job, None, after_seq, 100), follow=True))
            stream.settimeout(None)  # events come when they happen
            seen = after_seq  # events carry no "seq" where wardend keeps no history
            for event in history["events"]:
                seen = event.get("seq", seen)
                yield event
            while True:
                try:
                    line: Message = json.loads(stream._read_line())
                except (OSError, ValueError) as e:
                    raise Unavailable("lost the event stream from wardend on %s: %s"
                                      % (stream.socket_path, e)) from None
                event = line.get("event")
                if event is None:  # wardend dropping the follower; the line says why
                    raise Unavailable("wardend ended the event stream: %s"
                                      % (line.get("error") or {}).get("message", "no reason"))
                # Written while the history was read: sent in both.
                seq = event.get("seq")
                if seq is not None and seen is not None and seq <= seen:
                    continue
                seen = seq if seq is not None else seen
                yield event
        finally:
            stream.close()

    def check(self, reclaim: bool = False, grace: float = 5.0) -> Message:
        """Is the node clean for the next job? A dict with "clean" and "findings" (each with
        "kind", "what" and "action"); with ``reclaim`` (root), after ending stray GPU holders
        (SIGTERM, ``grace`` seconds, SIGKILL) and removing what is safe, with "reclaimed"."""
        previous = self._timeout
        if reclaim and previous is not None:
            # The answer comes after the grace and SIGKILL's wait for what ignores SIGTERM.
            self.settimeout(previous + grace + 15)
        try:
            reply = self.call({"op": "check", "reclaim": reclaim, "grace_s": grace})
        finally:
            if reclaim and previous is not None:
                self.settimeout(previous)
        reply.setdefault("findings", [])
        reply.setdefault("reclaimed", [])
        return reply


def _events_request(job: Optional[int], since: Optional[float], after_seq: Optional[int],
                    limit: int) -> Message:
    request: Message = {"op": "events", "limit": limit}
    if job is not None:
        request["job"] = job
    if since is not None:
        request["since_unix_ms"] = int(since * 1000)
    if after_seq is not None:
        request["after_seq"] = after_seq
    return request


def _command(command: Command) -> Message:
    """A command as the protocol wants it: a list is argv, a string runs through /bin/sh."""
    if isinstance(command, str):
        return {"argv": ["/bin/sh", "-c", command]}
    return {"argv": list(command)}
