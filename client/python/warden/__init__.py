"""warden: register a training job's processes, files and shared memory with wardend, which
cleans them up however the job ends (SIGKILL, OOM, segfault, hang).

    import warden
    with warden.Job("train", heartbeat=60) as job:
        scratch = job.tempdir()
        for batch in loader:
            step(batch)
            job.beat()
"""

__version__ = "0.1.0"  # wardend's (CMakeLists.txt); a test checks that they agree

from .client import Client, default_socket_path
from .errors import (BadRequest, FrameTooLarge, InvalidState, LimitExceeded, NoSuchProcess,
                     NotFound, PermissionDenied, Unavailable, UnknownOp, UnsupportedProtocol,
                     WardenError)
from .job import Job, current_job

__all__ = [
    "Client", "Job", "current_job", "default_socket_path", "WardenError", "BadRequest",
    "FrameTooLarge", "InvalidState", "LimitExceeded", "NoSuchProcess", "NotFound",
    "PermissionDenied", "Unavailable", "UnknownOp", "UnsupportedProtocol",
]
