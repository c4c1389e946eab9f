"""A job whose workers make shared memory and temp files and never register any (as NCCL, torch's
file_system strategy and tempfile users do) (tests/python/test_discovery.py).

argv: the name of a segment made before the job, which a worker maps too; optionally the job's
discover mode.
Prints {"job", "workers", "held", "mapped", "shared", "tempfile", "closed", "closed_tempfile",
"closed_by_main"} once every worker has made its objects: `held` a multiprocessing.shared_memory
segment open and mapped in a worker, `mapped` one only mapped (its descriptor closed), `shared` one
the test will hold open itself from outside the job, `tempfile` a file of tempfile's in /tmp,
`closed` a segment and `closed_tempfile` a temp file a worker made and closed (nothing holds them
at cleanup), `closed_by_main` a segment the main made and closed. Then waits to be killed.
"""

import json
import mmap
import multiprocessing
import os
import sys
import tempfile
import time
from multiprocessing import resource_tracker, shared_memory

import warden

PRIOR = sys.argv[1]
MODE = sys.argv[2] if len(sys.argv) > 2 else None  # the job's discover mode; None: wardend's


def untracked_segment(size):
    """A segment as NCCL or torch makes one: no resource tracker will unlink it for the job."""
    segment = shared_memory.SharedMemory(create=True, size=size)
    resource_tracker.unregister(segment._name, "shared_memory")
    segment.buf[:size] = b"\x01" * size  # in use, as a batch of tensors would be: not sparse
    return segment


def only_mapped(name, size):
    fd = os.open("/dev/shm/" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    os.ftruncate(fd, size)
    region = mmap.mmap(fd, size)
    os.close(fd)
    region[:] = b"\x01" * size
    return region


def made_and_closed(name, size):
    """A segment written and let go of: no descriptor, no mapping, still in /dev/shm."""
    with open("/dev/shm/" + name, "wb") as f:
        f.write(b"\x01" * size)


def worker(ready, index):
    keep = []
    if index == 0:
        held = untracked_segment(1 << 20)
        shared = untracked_segment(4096)
        keep += [held, shared]
        prior_fd = os.open("/dev/shm/" + PRIOR, os.O_RDWR)
        keep.append(mmap.mmap(prior_fd, 4096))
        ready.send({"held": held.name, "shared": shared.name})
    else:
        name = "warden-mapped-%d" % os.getpid()
        keep.append(only_mapped(name, 1 << 16))
        temp = tempfile.NamedTemporaryFile(prefix="warden-discover-", delete=False)
        temp.write(b"x" * 10000)
        temp.flush()
        keep.append(temp)
        closed = "warden-closed-%d" % os.getpid()
        made_and_closed(closed, 1 << 16)
        with tempfile.NamedTemporaryFile(prefix="warden-closed-", delete=False) as closed_temp:
            closed_temp.write(b"y" * 10000)
        ready.send({"mapped": name, "tempfile": temp.name, "closed": closed,
                    "closed_tempfile": closed_temp.name})
    while True:
        time.sleep(1)


with warden.Job("discover", grace=0.5, discover=MODE) as job:
    context = multiprocessing.get_context("fork")
    made = {}
    workers = []
    for index in range(2):
        receive, send = context.Pipe(duplex=False)
        process = context.Process(target=worker, args=(send, index))
        process.start()
        workers.append(process.pid)
        made.update(receive.recv())
    made["closed_by_main"] = "warden-closed-main-%d" % os.getpid()
    made_and_closed(made["closed_by_main"], 4096)
    print(json.dumps(dict(made, job=job.id, workers=workers)), flush=True)
    while True:
        time.sleep(1)
