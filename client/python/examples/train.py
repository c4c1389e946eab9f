"""A runnable example: a small model trained with a DataLoader(num_workers=2) under warden.

    WARDEN_SOCKET=/run/warden/warden.sock PYTHONPATH=client/python python3 client/python/examples/train.py

Kill it with `kill -9` while it trains and watch `wardenctl status`: the workers and the scratch
directory are gone at once. Without a wardend it trains all the same, after one warning.
"""

import os
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import warden
import warden.torch

features = torch.randn(2048, 8)
labels = features.sum(dim=1, keepdim=True)
model = nn.Linear(8, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

with warden.Job("example-train", heartbeat=30, grace=5) as job:
    scratch = job.tempdir()  # removed however the run ends
    loader = DataLoader(TensorDataset(features, labels), batch_size=64, shuffle=True,
                        num_workers=2, worker_init_fn=warden.torch.worker_init_fn())
    print("job %s, pid %d, scratch %s" % (job.id, os.getpid(), scratch), flush=True)
    for epoch in range(20):
        for x, y in loader:
            loss = nn.functional.mse_loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            job.beat()  # cheap; a hang stops it and wardend cleans up after 30 s
        torch.save(model.state_dict(), os.path.join(scratch, "checkpoint.pt"))
        print("epoch %d loss %.4f" % (epoch, loss.item()), flush=True)
        time.sleep(0.2)
