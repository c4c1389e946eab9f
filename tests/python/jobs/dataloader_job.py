"""A training job with a DataLoader(num_workers=4) whose worker 0 hangs forever in __getitem__
and whose worker 1 ignores SIGTERM (and is busy, so that DataLoader's own orphan check, which
runs only between batches, cannot end it either). Prints one JSON line with its pids, tempdir and shm segments
once every worker is running, then trains until killed.

    dataloader_job.py [--no-warden | --two-line] [--sharing file_system|file_descriptor]

--two-line is the README's adoption as it stands: `with warden.Job("train", heartbeat=60)` around
a DataLoader without warden's worker_init_fn, so wardend is told of no worker.
"""

import argparse
import json
import os
import signal
import sys
import threading
import time

import torch
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, Dataset, get_worker_info

import warden
import warden.torch

parser = argparse.ArgumentParser()
parser.add_argument("--no-warden", action="store_true")
parser.add_argument("--two-line", action="store_true")
parser.add_argument("--sharing", default="file_descriptor")
parser.add_argument("--grace", type=float, default=1.0)
parser.add_argument("--segment", help="a /dev/shm segment to create and register")
args = parser.parse_args()
mp.set_sharing_strategy(args.sharing)
ready_dir = os.environ["READY_DIR"]


class Stuck(Dataset):
    def __len__(self):
        return 1 << 30

    def __getitem__(self, index):
        worker = get_worker_info()
        with open(os.path.join(ready_dir, str(os.getpid())), "w"):
            pass
        if worker.id == 1 and args.two_line:  # no worker_init_fn to do it in
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if worker.id == 0:
            while True:  # a hang: never returns, never looks at its parent again
                time.sleep(1)
        if worker.id == 1:
            time.sleep(3600)  # a slow batch
        return torch.zeros(64, 64)


def ignore_term(worker_id):
    if worker_id == 1:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def announce(job, scratch):
    """Prints the pids once all four workers have started fetching (worker 0 blocks the loop),
    with the main pid as wardend's status shows it to this process."""
    while len(os.listdir(ready_dir)) < 4:
        time.sleep(0.01)
    workers = sorted(int(p) for p in os.listdir(ready_dir))
    seen = warden.Client().status(job.id)["main"]["pid"] if job else None
    print(json.dumps({"main": os.getpid(), "workers": workers, "tempdir": scratch,
                      "status_main_pid": seen}), flush=True)


def train(job):
    scratch = job.tempdir() if job else None
    if scratch:
        with open(os.path.join(scratch, "checkpoint.tmp"), "w") as f:
            f.write("partial")
    if args.segment:
        with open("/dev/shm/" + args.segment, "w") as f:
            f.write("segment")
        job.add_shm(args.segment)
    if args.two_line:
        init = None
    elif job:
        init = warden.torch.worker_init_fn(ignore_term)
    else:
        init = ignore_term
    loader = DataLoader(Stuck(), batch_size=4, num_workers=4, worker_init_fn=init,
                        prefetch_factor=2)
    threading.Thread(target=announce, args=(job, scratch), daemon=True).start()
    for batch in loader:  # blocks at once on worker 0's first batch, forever
        if job:
            job.beat()


if args.no_warden:
    train(None)
elif args.two_line:
    with warden.Job("train", heartbeat=60) as job:
        train(job)
else:
    with warden.Job("dataloader", heartbeat=0, grace=args.grace, strict=True) as job:
        train(job)
sys.exit(0)
