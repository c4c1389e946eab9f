"""A job with a DataLoader(num_workers=2) whose workers register through one form of
worker_init_fn; prints {"loader": [worker pids], "registered": [pids wardend has as workers]} after
a batch from each, then ends cleanly.

    init_forms_job.py direct|wrapped|own
"""

import json
import sys

import torch
from torch.utils.data import DataLoader, TensorDataset

import warden
import warden.torch

form = sys.argv[1]
called = []


def my_init(worker_id):
    called.append(worker_id)


def own_init(worker_id):
    warden.torch.register_worker()


init = {"direct": warden.torch.worker_init_fn,
        "wrapped": warden.torch.worker_init_fn(my_init),
        "own": own_init}[form]
data = TensorDataset(torch.arange(16, dtype=torch.float32))
# strict: each worker registers before its init function returns, so once each has delivered a
# batch (in order: batch i comes from worker i % 2), both are registered.
with warden.Job("init-forms", strict=True) as job:
    loader = DataLoader(data, batch_size=2, num_workers=2, worker_init_fn=init)
    it = iter(loader)
    next(it)
    next(it)
    status = warden.Client().status(job.id)
    print(json.dumps({"loader": sorted(w.pid for w in it._workers),
                      "registered": sorted(w["pid"] for w in status["workers"])}), flush=True)
    del it  # the workers shut down before the job ends (else its sweep would end them)
