"""Ray Train plumbing shared by the training loops (HetSGFormer, the rankers).

Worker side: :func:`restore` loads the last checkpoint into the model and optimizer,
:func:`report` reports an epoch's metrics with rank 0's checkpoint. Driver side: :func:`fit`
runs a ``TorchTrainer`` with the project's failure and checkpoint policy, calls
``progress(metrics)`` as each epoch ends, and re-raises a project error that a worker
raised as itself (one line on the CLI) instead of Ray's ``WorkerGroupError``.

A checkpoint is one ``state.pt``: ``{"model", "optimizer", "epoch", "history"}``, with
``history`` the JSON list of every epoch's metrics so far.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import ray
import ray.train
import torch
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.util.queue import Empty, Queue

from graphs.exceptions import HetrecError


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DDP wrapper (``prepare_model``), or the model itself."""
    return model.module if hasattr(model, "module") else model


def restore(model: torch.nn.Module, optimizer, device) -> tuple[int, list[dict]]:
    """Worker side: load the run's last checkpoint (if any) into ``model`` and ``optimizer``;
    returns ``(first epoch to run, history so far)``."""
    ckpt = ray.train.get_checkpoint()
    if not ckpt:
        return 0, []
    with ckpt.as_directory() as d:
        state = load_state(d, device)
    unwrap(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return state["epoch"] + 1, json.loads(state["history"])


def report(metrics: dict, model: torch.nn.Module, optimizer, epoch: int, history: list[dict], rank: int) -> None:
    """Worker side: ``ray.train.report`` the epoch's metrics; rank 0 attaches the checkpoint."""
    with tempfile.TemporaryDirectory() as d:
        checkpoint = None
        if rank == 0:
            torch.save({"model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                        "history": json.dumps(history)}, os.path.join(d, "state.pt"))
            checkpoint = Checkpoint.from_directory(d)
        ray.train.report(metrics, checkpoint=checkpoint)


def load_state(checkpoint: str | Path, device="cpu") -> dict:
    """A checkpoint folder's state (see the module docstring)."""
    return torch.load(os.path.join(checkpoint, "state.pt"), weights_only=True, map_location=device)


class _Progress(ray.train.UserCallback):
    """Runs on the Train controller: forwards rank 0's metrics of every epoch to the driver."""

    def __init__(self, queue: Queue):
        self.queue = queue

    def after_report(self, run_context, metrics: list[dict], checkpoint) -> None:
        self.queue.put({**metrics[0], "worker_pids": [m.get("pid") for m in metrics]})


@contextmanager
def epoch_progress(progress: Callable[[dict], None] | None) -> Iterator[list]:
    """Yields the ``RunConfig.callbacks`` that call ``progress(metrics)`` on the driver as
    each epoch ends (through a Ray queue that the controller's callback feeds): rank 0's
    metrics plus ``worker_pids``, every worker's ``pid`` metric by rank."""
    if progress is None:
        yield []
        return
    queue = Queue(actor_options={"num_cpus": 0})
    done = threading.Event()

    def drain() -> None:
        while not (done.is_set() and queue.empty()):
            try:
                progress(queue.get(timeout=0.2))
            except Empty:
                pass

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        yield [_Progress(queue)]
    finally:
        done.set()
        reader.join(timeout=5)
        ray.kill(queue.actor)


def fit(loop: Callable[[dict], None], config: dict, *, name: str, storage: Path, workers: int, use_gpu: bool,
        resources_per_worker: dict | None, keep: int = 2,
        progress: Callable[[dict], None] | None = None) -> ray.train.Result:
    """Driver side: run ``loop(config)`` on ``workers`` Ray Train workers (gloo on CPU, NCCL
    with ``use_gpu``), checkpoints under ``storage/name`` (the last ``keep``), restarted
    from the last checkpoint up to twice when a worker dies."""
    with epoch_progress(progress) as callbacks:
        trainer = TorchTrainer(
            loop, train_loop_config=config,
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                         resources_per_worker=resources_per_worker),
            run_config=RunConfig(name=name, storage_path=str(storage), callbacks=callbacks,
                                 failure_config=FailureConfig(max_failures=2),
                                 checkpoint_config=CheckpointConfig(num_to_keep=keep)))
        try:
            return trainer.fit()
        except ray.train.WorkerGroupError as err:
            first = next(iter(err.worker_failures.values()), None)
            cause = getattr(first, "cause", first)       # a RayTaskError keeps the worker's exception
            if isinstance(cause, HetrecError):
                raise cause from err
            raise
