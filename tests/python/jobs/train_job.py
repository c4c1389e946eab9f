"""A small training loop with a DataLoader, as a user would adopt warden (two lines marked).

    train_job.py clean|raise|hang [--strict]
"""

import json
import os
import sys
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

import warden  # adoption, line 1
import warden.torch

mode = sys.argv[1]
strict = "--strict" in sys.argv

data = TensorDataset(torch.arange(64, dtype=torch.float32).reshape(32, 2))
with warden.Job("train", heartbeat=1.0, grace=0.5, strict=strict,
                diagnose="echo diagnosing {pid}") as job:  # adoption, line 2
    scratch = job.tempdir()
    loader = DataLoader(data, batch_size=4, num_workers=2,
                        worker_init_fn=warden.torch.worker_init_fn())
    print(json.dumps({"job": job.id, "pid": os.getpid(), "tempdir": scratch}), flush=True)
    total = 0.0
    for epoch in range(2):
        for (batch,) in loader:
            total += float(batch.sum())
            job.beat()
            if mode == "raise":
                raise RuntimeError("loss is NaN")
            if mode == "hang":
                time.sleep(3600)  # the loop stops calling beat(): a hang
print("trained: total=%.0f" % total, flush=True)
