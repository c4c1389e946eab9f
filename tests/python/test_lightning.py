"""WardenCallback driven through Lightning's hook order for a run that raises, and one that ends.

Lightning is not installable here, so a minimal trainer calls the hooks with Lightning 2.x's
names, signatures and order (LightningDataModule.setup, then callbacks' setup; on_exception,
then teardown); the job, the daemon and the files are real.
"""

import os

import pytest

from warden.lightning import WardenCallback, job_for


class DataModule:
    """Stands for a LightningDataModule: `trainer` is set by Lightning when it is attached."""

    trainer = None
    cache = None

    def setup(self, stage):
        # The DataModule's own resources: gone however the run ends, SIGKILL included.
        self.cache = job_for(self).tempdir(prefix="dm-cache-")
        with open(os.path.join(self.cache, "shard-0"), "w") as f:
            f.write("data")


class Trainer:
    def __init__(self, callbacks, datamodule):
        self.callbacks = callbacks
        self.datamodule = datamodule
        datamodule.trainer = self

    def fit(self, steps, fail_at=None):
        module = object()
        self.datamodule.setup("fit")
        for cb in self.callbacks:
            cb.setup(self, module, "fit")
        try:
            for batch_idx in range(steps):
                if batch_idx == fail_at:
                    raise RuntimeError("CUDA error: an illegal memory access")
                for cb in self.callbacks:
                    cb.on_train_batch_end(self, module, None, None, batch_idx)
                    cb.on_validation_batch_end(self, module, None, None, batch_idx)
        except BaseException as exception:
            for cb in self.callbacks:
                cb.on_exception(self, module, exception)
            raise
        finally:
            for cb in self.callbacks:
                cb.teardown(self, module, "fit")


def test_run_that_raises_ends_failed_and_cleans_the_datamodules_resources(wardend):
    callback = WardenCallback("lightning-run", heartbeat=30, grace=0.5)
    dm = DataModule()
    trainer = Trainer([callback], dm)
    with pytest.raises(RuntimeError):
        trainer.fit(steps=10, fail_at=3)
    status = wardend.wait_for_state(callback.job.id, "cleaned")
    assert status["reason"] == "failed"
    assert [p["path"] for p in status["report"]["paths"]] == [dm.cache]
    assert status["report"]["paths"][0]["outcome"] == "removed"
    assert not os.path.exists(dm.cache)
    assert dm.warden_job is callback.job


def test_run_that_ends_cleanly_ends_ok(wardend):
    callback = WardenCallback("lightning-ok", heartbeat=30)
    dm = DataModule()
    Trainer([callback], dm).fit(steps=3)
    status = wardend.wait_for_state(callback.job.id, "cleaned")
    assert status["reason"] == "ended"
    assert status["report"]["paths"][0]["leftover"] is True
