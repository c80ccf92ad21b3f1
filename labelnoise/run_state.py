"""A run dir's state: what a checkpoint holds, where a run starts, and the files a run writes.

Where training starts (the resume order):

1. the run's own ``checkpoint.th``: everything, down to the position in the
   epoch and the random streams of every rank (a preempted or killed run
   continues as if it never stopped);
2. ``run.resume_from`` (a finished run dir or a checkpoint): weights,
   optimizer and the epoch counter, not the position in an epoch (the
   fine-tunes, "N more epochs");
3. ``run.init_from`` (a finished run dir's ``model.th`` or any model file):
   weights only (steps 2-3);
4. scratch.

Two trainers in one run dir are kept apart by the dir's ``lock``
(labelnoise.dirlock); the ranks of one run check that they found the same
state, since ranks that read different folders would train apart and then
wait forever in a collective that no longer matches.

``metrics.jsonl`` is the one file not replaced atomically: it is appended line
by line, and every checkpoint records its length, so a resumed run first cuts
it back to that length (no line of a step that is done again stays).
"""
from __future__ import annotations

import contextlib
import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import distributed, metric_log
from .atomic import write_text
from .checkpoint import CheckpointError, load_model, read_checkpoint, save_atomic, save_model
from .config import build_model, run_path, save_config
from .dirlock import FolderBusy, folder_lock
from .ema import WeightAverage
from .errors import naming
from .files import (BEST_MODEL_FILE, CHECKPOINT_FILE, CONFIG_FILE, DONE_FILE, EMA_MODEL_FILE, METRICS_FILE,
                    MODEL_FILE)
from .losses import ReconstructionLoss

log = logging.getLogger(__name__)

STATE_FORMAT = "mdx-labelnoise/train-state-v1"
_STATE_KEYS = ("model", "optimizer", "epoch", "step", "batch_in_epoch", "bad_steps", "bad_in_row", "best_sdr",
               "metrics_bytes", "world_size", "ranks")
_PROGRESS_KEYS = ("epoch", "step", "batch_in_epoch", "bad_steps", "bad_in_row", "best_sdr", "metrics_bytes")


class TrainingError(RuntimeError):
    """A run that cannot go on (diverged, a checkpoint that does not fit, ...)."""


@dataclass
class Progress:
    """Where a run stands; all of it goes into every checkpoint."""
    epoch: int = 0
    step: int = 0                   # optimizer steps taken (or skipped as bad)
    batch_in_epoch: int = 0         # micro-batches of this epoch consumed
    bad_steps: int = 0              # steps skipped as non-finite, in all ...
    bad_in_row: int = 0             # ... and since the last good one
    good_steps: int = 0             # optimizer steps taken since this run began
    start_step: int = 0             # the step this run began at (resume_from continues a counter)
    best_sdr: float | None = None   # the best validation SDR so far
    metrics_bytes: int = 0          # the length of metrics.jsonl at this point


def _rng_state(generator: torch.Generator, device: torch.device) -> dict:
    np_state = np.random.get_state()
    # Only the training device's CUDA stream: asking for every GPU's would start a
    # CUDA context on each GPU of the node in every process (and touch CUDA on a CPU run).
    return {"torch": torch.get_rng_state(),
            "cuda": [torch.cuda.get_rng_state(device)] if device.type == "cuda" else [],
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
            "python": random.getstate(),
            "augment": generator.get_state()}


def _set_rng_state(state: dict, generator: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"][0], device)
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    generator.set_state(state["augment"])


def _read_state(path: Path, what: str) -> dict:
    """A training checkpoint (``what`` says which, for the message), read as safely as any model file."""
    try:
        state = read_checkpoint(path)
    except CheckpointError as exc:
        raise TrainingError(f"{what}: {exc}") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise TrainingError(f"{what}: {path}: not a training checkpoint of this project (format {STATE_FORMAT})")
    missing = [k for k in _STATE_KEYS if k not in state]
    if missing:
        raise TrainingError(f"{what}: {path}: a training checkpoint without {', '.join(missing)}: corrupt")
    return state


class RunState:
    """The run dir of ``cfg`` and the objects whose state a checkpoint holds (every rank has one)."""

    def __init__(self, cfg: dict, dist: distributed.DistInfo, folder: Path, model: nn.Module,
                 optimizer: torch.optim.Optimizer, criterion: ReconstructionLoss, ema: WeightAverage | None,
                 generator: torch.Generator):
        self.cfg, self.dist, self.dir = cfg, dist, folder
        self.model, self.optimizer, self.criterion, self.ema, self.generator = (model, optimizer, criterion, ema,
                                                                                generator)
        self.progress = Progress()
        self._last_save = time.monotonic()

    # ------------------------------------------------------------ the run dir
    def finished(self) -> bool:
        return (self.dir / DONE_FILE).is_file()

    def agreed(self, value):
        """Rank 0's ``value`` on every rank."""
        return distributed.gather_objects(value)[0]

    def check_same_start(self, origin: str) -> None:
        """Every rank reads the run dir itself: ranks that found different things (a run.root on each
        node's own disk) would train apart and then wait forever in a collective that no longer matches."""
        origins = distributed.gather_objects(origin)
        if len(set(origins)) > 1:
            found = "; ".join(f"rank {rank}: {o}" for rank, o in enumerate(origins))
            raise TrainingError(f"{self.dir}: the processes found different states to start from ({found}); "
                                f"run.root must be a folder every node sees (a shared filesystem)")

    @contextlib.contextmanager
    def exclusive(self):
        """Rank 0 holds the run dir's lock while the run lasts; when another trainer holds it, every rank stops."""
        with contextlib.ExitStack() as stack:
            busy = None
            if self.dist.is_main:
                try:
                    stack.enter_context(folder_lock(self.dir, "trainer"))
                except FolderBusy as exc:
                    busy = str(exc)
            busy = self.agreed(busy)
            if busy is not None:
                raise TrainingError(busy)
            yield

    def begin(self) -> str:
        """Under the lock: load where the run starts, write its config, cut metrics.jsonl back; a word for the log."""
        if self.dist.is_main:
            # Temporary files of a process killed while writing (labelnoise.atomic); under the lock
            # no one else is writing here.
            for stale in self.dir.glob(".*.tmp.*"):
                stale.unlink()
        origin = self.restore()
        self.check_same_start(origin)
        if self.dist.is_main:
            self.dir.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, self.dir / CONFIG_FILE)
        path = self.dir / METRICS_FILE
        if self.dist.is_main and path.exists() and path.stat().st_size > self.progress.metrics_bytes:
            with open(path, "r+b") as f:
                f.truncate(self.progress.metrics_bytes)
        return origin

    def write_metrics(self, record: dict) -> None:
        """One line of metrics.jsonl (rank 0), mirrored to TensorBoard / W&B when run.tensorboard / run.wandb."""
        if not self.dist.is_main:
            return
        line = json.dumps(record) + "\n"
        path = self.dir / METRICS_FILE
        with naming(path), open(path, "a") as f:
            f.write(line)
        self.progress.metrics_bytes += len(line.encode())
        metric_log.mirror(self.cfg, self.dir, record)

    def save_due(self) -> bool:
        """Rank 0's clock says run.save_every_minutes have passed since the last checkpoint."""
        return self.dist.is_main and time.monotonic() - self._last_save > 60 * self.cfg["run"]["save_every_minutes"]

    def save(self) -> None:
        """Every rank calls this (the RNG states are gathered); rank 0 writes."""
        state = self.state_dict()
        if self.dist.is_main:
            save_atomic(state, self.dir / CHECKPOINT_FILE)
            log.info("saved %s (epoch %d, step %d)", self.dir / CHECKPOINT_FILE, self.progress.epoch,
                     self.progress.step)
        self._last_save = time.monotonic()

    def save_best(self, sdr: float) -> None:
        """Rank 0: a validation SDR; the weights become best.th when it beats every earlier one."""
        p = self.progress
        if p.best_sdr is None or sdr > p.best_sdr:
            p.best_sdr = sdr
            save_model(self.model, self.dir / BEST_MODEL_FILE, config=self.cfg, epoch=p.epoch, sdr=sdr)

    def finish(self) -> None:
        """The final weights (and their EMA), then ``done``: a run that has it returns at once."""
        p = self.progress
        if self.dist.is_main:
            save_model(self.model, self.dir / MODEL_FILE, config=self.cfg, epoch=p.epoch, step=p.step)
            if self.ema is not None:
                averaged = build_model(self.cfg)
                averaged.load_state_dict(self.ema.weights)
                save_model(averaged, self.dir / EMA_MODEL_FILE, config=self.cfg, epoch=p.epoch, step=p.step,
                           ema=self.ema.decay)
            write_text(self.dir / DONE_FILE, f"epoch {p.epoch} step {p.step} bad_steps {p.bad_steps}\n")
        distributed.barrier()

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        # Per rank: its random streams and its loss's running-truncation window.
        ranks = distributed.gather_objects({"rng": _rng_state(self.generator, self.dist.device),
                                            "loss": self.criterion.state_dict()})
        p = self.progress
        return {"format": STATE_FORMAT, "config": self.cfg,
                "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                "optimizer": self.optimizer.state_dict(),
                "epoch": p.epoch, "step": p.step, "batch_in_epoch": p.batch_in_epoch,
                "bad_steps": p.bad_steps, "bad_in_row": p.bad_in_row, "best_sdr": p.best_sdr,
                "good_steps": p.good_steps, "start_step": p.start_step,
                "metrics_bytes": p.metrics_bytes, "world_size": self.dist.world_size, "ranks": ranks,
                "ema": None if self.ema is None else self.ema.state_dict()}

    def restore(self) -> str:
        """Load where this run starts from (the resume order above); returns a word for the log."""
        own = self.dir / CHECKPOINT_FILE
        run = self.cfg["run"]
        if own.is_file():
            return self._restore_own(own)
        if run["resume_from"] is not None:
            # A fine-tune continues a finished run "for N more epochs"; a run still going is no base.
            path = self._finished_run_file("resume_from", CHECKPOINT_FILE)
            if not path.is_file():
                raise TrainingError(f"{path}: run.resume_from names no checkpoint (has that run started?)")
            state = _read_state(path, "run.resume_from")
            self._load_weights(state["model"], path)
            self._load_optimizer(state["optimizer"], path)
            self._reset_ema()
            # The epoch counter continues; the position in an epoch does not (new data).
            p = self.progress
            p.epoch, p.step = state["epoch"], state["step"]
            p.start_step = p.step
            return f"resume_from {path} (epoch {p.epoch})"
        if run["init_from"] is not None:
            path = self._finished_run_file("init_from", MODEL_FILE)
            try:
                source = load_model(path, config=self.cfg)
            except CheckpointError as exc:
                raise TrainingError(f"run.init_from: {exc}") from None
            self._load_weights(source.state_dict(), path)
            self._reset_ema()
            return f"init_from {path} (weights only)"
        return "scratch"

    def _restore_own(self, own: Path) -> str:
        state = _read_state(own, "this run's own checkpoint (move it away to start the run afresh)")
        self._load_weights(state["model"], own)
        self._load_optimizer(state["optimizer"], own)
        p = self.progress
        for key in _PROGRESS_KEYS:
            setattr(p, key, state[key])
        # Checkpoints from before these were kept: every good step counted, the run began at 0.
        p.good_steps = state.get("good_steps", p.step - p.bad_steps)
        p.start_step = state.get("start_step", 0)
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"], self.dist.device)
        elif self.ema is not None:
            log.warning("%s: holds no EMA; the EMA starts from the current weights", own)
            self._reset_ema()
        if state["world_size"] == self.dist.world_size:
            mine = state["ranks"][self.dist.rank]
            _set_rng_state(mine["rng"], self.generator, self.dist.device)
            # Checkpoints from before the loss had a state_dict() hold its window as loss_history.
            self.criterion.load_state_dict(mine["loss"] if "loss" in mine else {"history": mine["loss_history"]})
        else:
            log.warning("%s: saved by %d process(es), resumed by %d: random streams start afresh",
                        own, state["world_size"], self.dist.world_size)
        if p.batch_in_epoch and state["world_size"] != self.dist.world_size:
            p.batch_in_epoch = 0  # the shards differ: redo this epoch's position from its start
        return f"its own checkpoint (epoch {p.epoch}, step {p.step})"

    def _finished_run_file(self, key: str, name: str) -> Path:
        """``run.<key>`` as a path; for a run dir, its file ``name``, once that run is ``done``."""
        path = run_path(self.cfg, self.cfg["run"][key])
        if not path.is_dir():
            return path
        if not (path / DONE_FILE).is_file():
            raise TrainingError(f"{path}: run.{key} names a run that has not finished (no {DONE_FILE})")
        return path / name

    def _load_weights(self, state_dict: dict, path: Path) -> None:
        try:
            self.model.load_state_dict(state_dict, strict=True)
        except (RuntimeError, TypeError, AttributeError, KeyError) as exc:
            raise TrainingError(f"{path}: the weights do not fit this config's model "
                                f"({str(exc).splitlines()[0]})") from None

    def _load_optimizer(self, state: dict, path: Path) -> None:
        try:
            self.optimizer.load_state_dict(state)
        except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as exc:
            raise TrainingError(f"{path}: its optimizer state does not fit this config's model ({exc})") from None
        # A loaded optimizer state carries the old run's hyper-parameters; the config wins.
        optim = self.cfg["optim"]
        for group in self.optimizer.param_groups:
            group.update(lr=optim["lr"], betas=tuple(optim["betas"]), weight_decay=optim["weight_decay"])

    def _reset_ema(self) -> None:
        if self.ema is not None:
            self.ema.reset(self.model)
