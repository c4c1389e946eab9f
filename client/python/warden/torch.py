"""PyTorch DataLoader support: each worker registers itself with the job from inside the worker.

    import warden, warden.torch
    with warden.Job("train", heartbeat=60) as job:
        loader = DataLoader(ds, num_workers=4, worker_init_fn=warden.torch.worker_init_fn())

Workers are forked after the job exported WARDEN_JOB, so each finds the job in its environment.
With torch's ``file_system`` sharing strategy, tensors travel through /dev/shm files named
``torch_<pid>_*``; the worker also registers those of its own pid and of the main process, so a
SIGKILLed job leaves no segment behind.
"""

import os

from .job import Job, current_job


def _sharing_strategy():
    try:
        import torch.multiprocessing as mp
    except ImportError:
        return None
    return mp.get_sharing_strategy()


def register_worker(job=None):
    """Registers the calling process (a worker) with the job; returns the attached job or None."""
    job = job or current_job()
    if job is None:
        return None
    if not isinstance(job, Job) or job.id is None:
        return job
    attached = Job.attach(job.id, socket_path=os.environ.get("WARDEN_SOCKET"), strict=job.strict)
    attached.add_process(os.getpid())
    if _sharing_strategy() == "file_system":
        attached.add_shm_glob("torch_%d_*" % os.getpid())
        attached.add_shm_glob("torch_%d_*" % os.getppid())
    return attached


def worker_init_fn(user_fn=None):
    """A DataLoader ``worker_init_fn`` that registers the worker, then calls ``user_fn(worker_id)``."""

    def init(worker_id):
        register_worker()
        if user_fn is not None:
            user_fn(worker_id)

    return init
