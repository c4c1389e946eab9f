"""A job whose training loop beats every 10 ms (tests/python/test_hung_wardend.py).

Prints {"job", "pid"} once registered. Then, for each line on stdin:
  beat SECONDS   beats every 10 ms for SECONDS, timing each beat() call; prints
                 {"calls", "max_ms", "p99_ms"}
  regain         beats every 10 ms until the job is supervised again (at most 20 s); prints
                 {"supervised", "after_s"}
  epoch          one epoch of a DataLoader (2 workers registered by warden.torch.worker_init_fn)
                 that beats every batch; prints {"epoch_s"}
"""

import json
import os
import sys
import time

import torch
from torch.utils.data import DataLoader, Dataset

import warden
import warden.torch


class Slow(Dataset):
    def __len__(self):
        return 160

    def __getitem__(self, index):
        time.sleep(0.02)
        return torch.zeros(4)


def say(**fields):
    print(json.dumps(fields), flush=True)


with warden.Job("beats", heartbeat=2, grace=0.5) as job:
    say(job=job.id, pid=os.getpid())
    for line in sys.stdin:
        command, *args = line.split()
        if command == "beat":
            took = []
            end = time.monotonic() + float(args[0])
            while time.monotonic() < end:
                start = time.perf_counter()
                job.beat()
                took.append(time.perf_counter() - start)
                time.sleep(0.01)
            took.sort()
            say(calls=len(took), max_ms=took[-1] * 1e3, p99_ms=took[int(len(took) * 0.99)] * 1e3)
        elif command == "regain":
            start = time.monotonic()
            while not job.active and time.monotonic() - start < 20:
                job.beat()
                time.sleep(0.01)
            say(supervised=job.active, after_s=time.monotonic() - start)
        elif command == "epoch":
            start = time.monotonic()
            loader = DataLoader(Slow(), batch_size=4, num_workers=2,
                                worker_init_fn=warden.torch.worker_init_fn())
            for _ in loader:
                job.beat()
            say(epoch_s=time.monotonic() - start)
