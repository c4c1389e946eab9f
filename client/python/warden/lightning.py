"""Lightning support: a callback that makes a training run a warden job, and gives the
LightningDataModule the ``on_exception`` it lacks, from outside the process.

    from warden.lightning import WardenCallback
    trainer = Trainer(callbacks=[WardenCallback("train", heartbeat=120)])

In the DataModule, register what must not outlive the run (it is removed however the run ends,
SIGKILL included):

    def setup(self, stage):
        job = warden.lightning.job_for(self)   # or warden.current_job()
        self.cache = job.tempdir()

Lightning itself is imported only if installed; the hooks follow its documented names and
signatures (``setup``, ``on_train_batch_end``, ``on_validation_batch_end``, ``on_exception``,
``teardown``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from .job import Job, current_job

if TYPE_CHECKING:  # Lightning's types are not the client's to require
    _Callback = object
else:
    try:  # Lightning 2.x, then the older package name
        from lightning.pytorch.callbacks import Callback as _Callback
    except ImportError:
        try:
            from pytorch_lightning.callbacks import Callback as _Callback
        except ImportError:
            _Callback = object


def job_for(datamodule: Any = None) -> Optional[Job]:
    """The job a DataModule belongs to: the one its trainer's WardenCallback runs. Lightning calls
    ``LightningDataModule.setup`` before callbacks' ``setup``, so the job may not be registered
    yet; what is added to it then is registered as soon as it is."""
    if datamodule is not None:
        job: Optional[Job] = getattr(datamodule, "warden_job", None)
        if job is not None:
            return job
        trainer = getattr(datamodule, "trainer", None)
        for callback in getattr(trainer, "callbacks", None) or []:
            if isinstance(callback, WardenCallback):
                return callback.job
    return current_job()


class WardenCallback(_Callback):
    """Registers the run on setup, beats on every train and validation batch, ends the job failed
    on an exception and ok on teardown. Extra keyword arguments go to :class:`warden.Job`."""

    def __init__(self, name: str = "lightning", heartbeat: float = 0.0, grace: float = 5.0,
                 **job_kwargs: Any) -> None:
        super().__init__()
        self.job = Job(name, heartbeat=heartbeat, grace=grace, **job_kwargs)
        self._failed = False

    def setup(self, trainer: Any, pl_module: Any, stage: Optional[str]) -> None:
        if self.job.id is None and not self.job._ended:
            self.job.start()
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is not None:
            datamodule.warden_job = self.job

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.job.beat()

    def on_validation_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        self.job.beat()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._failed = True
        self.job.end(ok=False)

    def teardown(self, trainer: Any, pl_module: Any, stage: Optional[str]) -> None:
        self.job.end(ok=not self._failed)
