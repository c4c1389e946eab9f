"""A training job on a real GPU whose main process and DataLoader workers each hold device memory
and whose workers hang (a stuck C extension, NCCL): nothing in the job will ever free that memory
once the main process is SIGKILLed.

    gpu_job.py [--no-warden] [--workers N] [--mib M]

Prints one JSON line, {"main": pid, "workers": [pids]}, once every process holds its memory.
"""

import argparse
import json
import os
import sys
import time

import torch
from torch.utils.data import DataLoader, Dataset

import warden
import warden.torch

class HoldsGpu(Dataset):
    """Each worker takes device memory, says so, then hangs in __getitem__."""

    def __init__(self, mib):
        self.mib = mib

    def __len__(self):
        return 1 << 20

    def __getitem__(self, index):
        held = torch.empty(self.mib << 20, dtype=torch.uint8, device="cuda")
        torch.cuda.synchronize()
        with open(os.path.join(os.environ["READY_DIR"], str(os.getpid())), "w"):
            pass
        while True:  # hung, holding `held`
            time.sleep(1)


def run(args):
    main_memory = torch.empty(args.mib << 20, dtype=torch.uint8, device="cuda")
    torch.cuda.synchronize()
    # CUDA cannot be used in a forked child: the workers are spawned (and import this module).
    loader = DataLoader(HoldsGpu(args.mib), num_workers=args.workers,
                        multiprocessing_context="spawn",
                        worker_init_fn=None if args.no_warden else warden.torch.worker_init_fn)
    it = iter(loader)
    workers = [w.pid for w in it._workers]
    while len(os.listdir(os.environ["READY_DIR"])) < args.workers:
        time.sleep(0.05)
    print(json.dumps({"main": os.getpid(), "workers": workers}), flush=True)
    next(it)  # never returns: every worker hangs
    del main_memory


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--no-warden", action="store_true")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--mib", type=int, default=512)
    parser.add_argument("--grace", type=float, default=2.0)
    args = parser.parse_args()
    if args.no_warden:
        run(args)
    else:
        with warden.Job("gpu-job", grace=args.grace, strict=True):
            run(args)
    sys.exit(0)
