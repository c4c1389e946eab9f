"""PyTorch DataLoader support: each worker registers itself with the job from inside the worker.

    import warden, warden.torch
    with warden.Job("train", heartbeat=60) as job:
        loader = DataLoader(ds, num_workers=4, worker_init_fn=warden.torch.worker_init_fn)

``worker_init_fn=warden.torch.worker_init_fn(my_init)`` registers the worker and then calls
``my_init(worker_id)``; a ``worker_init_fn`` of your own may instead call
``warden.torch.register_worker()`` itself.

Workers are forked after the job exported WARDEN_JOB, so each finds the job in its environment.
With torch's ``file_system`` sharing strategy, tensors travel through /dev/shm files named
``torch_<pid>_*``; the worker also registers those of its own pid and of the main process, so a
SIGKILLed job leaves no segment behind.
"""

from __future__ import annotations

import importlib
import os
import threading
from typing import Callable, Optional, Union

from .job import Job, current_job

#: What DataLoader calls in each worker with the worker's id.
InitFn = Callable[[int], None]


def _sharing_strategy() -> Optional[str]:
    # Imported by name: torch is not the client's to require, nor its types.
    try:
        mp = importlib.import_module("torch.multiprocessing")
    except ImportError:
        return None
    return str(mp.get_sharing_strategy())


def register_worker(job: Optional[Job] = None) -> None:
    """Registers the calling process (a worker) with the job. A strict job's worker registers
    before this returns (raising if it cannot); any other's from a background thread, so that a
    worker never waits on wardend."""
    job = job or current_job()
    if not isinstance(job, Job) or job.id is None:
        return
    if job.strict:
        _register(job.id, job.strict)
    else:
        threading.Thread(target=_register, args=(job.id, False), daemon=True,
                         name="warden-worker").start()


def _register(job_id: int, strict: bool) -> None:
    attached = Job.attach(job_id, socket_path=os.environ.get("WARDEN_SOCKET"), strict=strict)
    attached.add_process(os.getpid())
    if _sharing_strategy() == "file_system":
        attached.add_shm_glob("torch_%d_*" % os.getpid())
        attached.add_shm_glob("torch_%d_*" % os.getppid())


def worker_init_fn(user_fn: Union[int, InitFn, None] = None) -> Optional[InitFn]:
    """A DataLoader ``worker_init_fn`` in either form:

    - ``worker_init_fn=warden.torch.worker_init_fn``: DataLoader calls it with the worker id, and it
      registers the worker;
    - ``worker_init_fn=warden.torch.worker_init_fn(my_init)`` (or ``()``): returns an init function
      that registers the worker, then calls ``my_init(worker_id)``.

    Anything else is a mistake that would leave workers untracked, so it raises TypeError at once.
    """
    if isinstance(user_fn, int) and not isinstance(user_fn, bool):
        register_worker()  # called by DataLoader, in a worker: user_fn is the worker id
        return None
    if user_fn is not None and not callable(user_fn):
        raise TypeError(
            "warden.torch.worker_init_fn takes your own init function (or nothing), not %r; "
            "pass worker_init_fn=warden.torch.worker_init_fn, or worker_init_fn="
            "warden.torch.worker_init_fn(my_init)" % (user_fn,))

    def init(worker_id: int) -> None:
        register_worker()
        if callable(user_fn):
            user_fn(worker_id)

    return init
