"""The training loop of every stage: one config in, a run dir out.

    from labelnoise.config import load_config
    from labelnoise.trainer import Trainer
    code = Trainer(load_config("configs/tiny/step1.yaml", ["data.root=data/tiny"])).run()

A run lives in ``<run.root>/<run.name>/``:

    config.yaml     the resolved config (also inside every checkpoint)
    metrics.jsonl   one JSON line per optimizer step and per epoch
    checkpoint.th   the latest full state: model, optimizer, epoch, step,
                    position in the epoch, RNG states of every rank
    model.th        the final weights (labelnoise.checkpoint format)
    model_ema.th    the final EMA of the weights (with optim.ema > 0)
    best.th         the weights with the best validation SDR (when validating)
    done            written last; a run that has it returns at once
    lock            held (flock) by the trainer running in this dir: a second
                    trainer on the same dir stops at once, naming the holder's PID

Where training starts: the run's own ``checkpoint.th``, else
``run.resume_from`` (a run dir or checkpoint: weights, optimizer and epoch
counter), else ``run.init_from`` (a run dir's ``model.th`` or any model file:
weights only), else scratch.

Exit codes of :meth:`Trainer.run` (and of ``train.py``):
``EXIT_DONE`` (0) the run is finished; ``EXIT_PREEMPTED`` (3) SIGUSR1 or
SIGTERM arrived, the state was saved and the same command continues it
(the sbatch scripts requeue on 3). A run that cannot go on raises
TrainingError: data that cannot be read, a checkpoint that cannot be used,
a run that diverged, and a run whose every step was skipped as non-finite
(it writes no ``model.th``: there is no trained model to write).

``metrics.jsonl`` is the one file not replaced atomically: it is appended
line by line, and every checkpoint records its length, so a resumed run first
cuts it back to that length (no line of a step that is done again stays).
"""
from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import random
import signal
import threading
import time
from pathlib import Path

import numpy as np
import torch
from .progress import bar as progress_bar
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from . import distributed, metric_log
from .atomic import write_text
from .audio import AudioError
from .augment import FlipChannels, FlipSign, Remix, Scale, Shift, build_repitch
from .checkpoint import CheckpointError, load_model, read_checkpoint, save_atomic, save_model
from .config import build_model, run_dir, run_path, save_config
from .data import EpochSampler, PoolDataset, TrackDataset
from .dirlock import FolderBusy, folder_lock
from .errors import naming
from .losses import ReconstructionLoss

log = logging.getLogger(__name__)

EXIT_DONE = 0
EXIT_PREEMPTED = 3
STATE_FORMAT = "mdx-labelnoise/train-state-v1"
PREEMPT_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


class TrainingError(RuntimeError):
    """A run that cannot go on (diverged, a checkpoint that does not fit, ...)."""


# ---------------------------------------------------------------- building blocks

def build_dataset(cfg: dict, item_transform=None):
    """The config's dataset; a data folder or metadata that cannot be used is a TrainingError."""
    try:
        return _dataset(cfg, item_transform)
    except (FileNotFoundError, ValueError) as exc:  # AudioError is a ValueError
        raise TrainingError(f"data: {exc}") from None


def _dataset(cfg: dict, item_transform=None):
    data = cfg["data"]
    source = data["metadata"] if data["metadata"] is not None else data["root"]
    common = dict(sources=cfg["model"]["sources"], segment=data["segment"], samplerate=data["samplerate"],
                  seed=cfg["run"]["seed"], item_transform=item_transform)
    if data["mode"] == "tracks":
        return TrackDataset(source, stride=data["stride"], items_per_epoch=data["items_per_epoch"], **common)
    if data["mode"] == "pool":
        if data["items_per_epoch"] is None:
            raise TrainingError("data.items_per_epoch must be set for data.mode pool (an epoch is that many items)")
        return PoolDataset(source, grid=data["grid"], items_per_epoch=data["items_per_epoch"], **common)
    raise TrainingError(f"data.mode must be 'tracks' or 'pool', got {data['mode']!r}")


def build_augment(cfg: dict, generator: torch.Generator):
    """(item_transform for the loader or None, batch augmentation as a module list)."""
    aug, sr = cfg["augment"], cfg["data"]["samplerate"]
    item_transform, batch = None, []
    repitch = dict(aug["repitch"])
    backend = repitch.pop("backend")
    if repitch["proba"] > 0:
        if backend == "vocoder":
            batch.append(build_repitch(backend, sr, generator=generator, **repitch))
        else:
            item_transform = build_repitch(backend, sr, **repitch)
    # The demucs solver's order: Shift, FlipChannels, FlipSign, Scale, Remix.
    if aug["shift"] > 0:
        batch.append(Shift(int(aug["shift"] * sr), generator=generator))
    if aug["flip"]:
        batch += [FlipChannels(generator=generator), FlipSign(generator=generator)]
    if aug["scale"]["proba"] > 0:
        batch.append(Scale(aug["scale"]["proba"], aug["scale"]["min"], aug["scale"]["max"], generator=generator))
    if aug["remix"]["proba"] > 0:
        group = aug["remix"]["group_size"]
        if group and cfg["optim"]["batch_size"] % group:
            raise TrainingError(f"augment.remix.group_size {group} does not divide optim.batch_size "
                                f"{cfg['optim']['batch_size']}; set augment.remix.proba=0 or change one of them")
        batch.append(Remix(aug["remix"]["proba"], group, generator=generator))
    return item_transform, nn.ModuleList(batch).train()


class _SkipSampler(torch.utils.data.Sampler):
    """An epoch's sampler without its first ``skip`` indices (a run resumed mid-epoch)."""

    def __init__(self, sampler, skip: int):
        self.sampler, self.skip = sampler, skip

    def __iter__(self):
        return itertools.islice(iter(self.sampler), self.skip, None)

    def __len__(self):
        return max(0, len(self.sampler) - self.skip)


def _ignore_preemption(worker_id: int) -> None:
    """Loader workers leave SIGUSR1/SIGTERM to the trainer (SLURM signals every process of a step);
    they end when the trainer shuts its loader down or exits."""
    for s in PREEMPT_SIGNALS:
        signal.signal(s, signal.SIG_IGN)


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


_STATE_KEYS = ("model", "optimizer", "epoch", "step", "batch_in_epoch", "bad_steps", "bad_in_row", "best_sdr",
               "metrics_bytes", "world_size", "ranks")


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


def _one_line(exc: BaseException) -> str:
    """The error itself: a DataLoader worker's error comes back with the worker's traceback in its text."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    last = lines[-1] if lines else type(exc).__name__
    return last.removeprefix(f"{type(exc).__module__}.{type(exc).__name__}: ")


# ---------------------------------------------------------------- the trainer

class Trainer:
    """Builds everything a resolved config describes; :meth:`run` trains to ``optim.epochs``."""

    def __init__(self, cfg: dict, dist_info: distributed.DistInfo | None = None):
        self.cfg = cfg
        self.dist = dist_info or distributed.DistInfo(0, 0, 1, torch.device("cpu"))
        self.device = self.dist.device
        self.dir = run_dir(cfg)
        run, optim, train = cfg["run"], cfg["optim"], cfg["train"]
        if train["precision"] not in ("bf16", "float32"):
            raise TrainingError(f"train.precision must be bf16 or float32, got {train['precision']!r}")
        # One code path on every device: autocast to bf16 on CUDA, on a CPU only with
        # train.bf16_on_cpu (what the tests run; most CPUs are slower in bf16).
        self.amp = train["precision"] == "bf16" and (self.device.type == "cuda" or train["bf16_on_cpu"])
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = train["tf32"]
            torch.backends.cudnn.allow_tf32 = train["tf32"]
        self.sources = list(cfg["model"]["sources"])

        # The same initial weights on every rank (DDP would broadcast rank 0's anyway);
        # then each rank its own stream (dropout) and augmentation draws.
        torch.manual_seed(run["seed"])
        try:
            self.model = build_model(cfg).to(self.device)
        except (TypeError, ValueError, AssertionError) as exc:  # a keyword value the network refuses
            raise TrainingError(f"model: cannot build {cfg['model'].get('arch', 'htdemucs')} from the config's "
                                f"model section ({exc})") from None
        seed = run["seed"] + 1000 * self.dist.rank
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        self.generator = torch.Generator().manual_seed(seed)

        if train["compile"]:
            self._compile_network()
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(self.model, device_ids=ids)
        else:
            self.ddp = self.model
        # optim.ema > 0: an exponential moving average of the weights, written as model_ema.th.
        self.ema_decay = optim["ema"]
        self.ema = ({k: v.detach().clone().float() for k, v in self.model.state_dict().items()}
                    if self.ema_decay > 0 else None)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=optim["lr"], betas=tuple(optim["betas"]),
                                          weight_decay=optim["weight_decay"])
        self.criterion = ReconstructionLoss(optim["loss"], optim["trunc_ratio"], optim["weights"],
                                            optim["trunc_scope"], optim["trunc_by"], optim["trunc_window"])
        item_transform, self.augment = build_augment(cfg, self.generator)
        self.augment.to(self.device)
        self.dataset = build_dataset(cfg, item_transform)
        self.sampler = EpochSampler(self.dataset, rank=self.dist.rank, world_size=self.dist.world_size,
                                    seed=run["seed"])
        labels = Path(cfg["data"]["root"]) / "noise_labels.json"
        # Ground truth of synthetic sets (labelnoise.synth): {track: {source: {"noisy": bool, ...}}}.
        self.noise_labels = json.loads(labels.read_text()) if labels.is_file() else None
        self.batch_size, self.accumulate = optim["batch_size"], optim["accumulate"]
        self.steps_per_epoch = len(self.sampler) // self.batch_size // self.accumulate
        if self.steps_per_epoch == 0:
            raise TrainingError(
                f"{cfg['data']['root']}: {len(self.dataset)} items give no optimizer step with "
                f"{self.dist.world_size} process(es) x batch {self.batch_size} x accumulate {self.accumulate}")

        # Progress; what a checkpoint restores.
        self.epoch = 0
        self.step = 0              # optimizer steps taken (or skipped as bad)
        self.batch_in_epoch = 0    # micro-batches of this epoch consumed
        self.bad_steps = 0
        self.bad_in_row = 0
        self.good_steps = 0        # optimizer steps taken since this run began
        self.start_step = 0        # the step this run began at (resume_from continues a counter)
        self.best_sdr = None
        self.metrics_bytes = 0
        self._signal = None
        self._last_save = time.monotonic()

    def _compile_network(self) -> None:
        # The network between the STFT and the iSTFT only: Inductor generates no complex
        # kernels, and a whole-model compile did not finish on a CPU. In place, so the
        # parameter names (checkpoints, DDP, the EMA) stay the same.
        compile_network = getattr(self.model, "compile_network", None)
        if compile_network is None:
            raise TrainingError(f"train.compile: model.arch {self.cfg['model'].get('arch')!r} has no "
                                f"compile_network(); set train.compile=false")
        compile_network()

    # ------------------------------------------------------------ state
    def _state(self) -> dict:
        # Per rank: its random streams and its running-truncation window.
        ranks = distributed.gather_objects({"rng": _rng_state(self.generator, self.device),
                                            "loss_history": self.criterion._history})
        return {"format": STATE_FORMAT, "config": self.cfg,
                "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                "optimizer": self.optimizer.state_dict(),
                "epoch": self.epoch, "step": self.step, "batch_in_epoch": self.batch_in_epoch,
                "bad_steps": self.bad_steps, "bad_in_row": self.bad_in_row, "best_sdr": self.best_sdr,
                "good_steps": self.good_steps, "start_step": self.start_step,
                "metrics_bytes": self.metrics_bytes, "world_size": self.dist.world_size, "ranks": ranks,
                "ema": None if self.ema is None else {k: v.cpu() for k, v in self.ema.items()}}

    def save_checkpoint(self) -> None:
        """Every rank calls this (the RNG states are gathered); rank 0 writes."""
        state = self._state()
        if self.dist.is_main:
            save_atomic(state, self.dir / "checkpoint.th")
            log.info("saved %s (epoch %d, step %d)", self.dir / "checkpoint.th", self.epoch, self.step)
        self._last_save = time.monotonic()

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

    def _reset_ema(self) -> None:
        if self.ema is not None:
            self.ema = {k: v.detach().clone().float() for k, v in self.model.state_dict().items()}

    @torch.no_grad()
    def _update_ema(self) -> None:
        for k, v in self.model.state_dict().items():
            if v.is_floating_point():
                self.ema[k].lerp_(v.float(), 1 - self.ema_decay)
            else:
                self.ema[k].copy_(v)

    def _apply_optim_config(self) -> None:
        # A loaded optimizer state carries the old run's hyper-parameters; the config wins.
        optim = self.cfg["optim"]
        for group in self.optimizer.param_groups:
            group.update(lr=optim["lr"], betas=tuple(optim["betas"]), weight_decay=optim["weight_decay"])

    def _finished_run_file(self, key: str, name: str) -> Path:
        """``run.<key>`` as a path; for a run dir, its file ``name``, once that run is ``done``."""
        path = run_path(self.cfg, self.cfg["run"][key])
        if not path.is_dir():
            return path
        if not (path / "done").is_file():
            raise TrainingError(f"{path}: run.{key} names a run that has not finished (no 'done')")
        return path / name

    def restore(self) -> str:
        """Load where this run starts from; returns a word for the log."""
        own = self.dir / "checkpoint.th"
        run = self.cfg["run"]
        if own.is_file():
            state = _read_state(own, "this run's own checkpoint (move it away to start the run afresh)")
            self._load_weights(state["model"], own)
            self._load_optimizer(state["optimizer"], own)
            self._apply_optim_config()
            for key in ("epoch", "step", "batch_in_epoch", "bad_steps", "bad_in_row", "best_sdr", "metrics_bytes"):
                setattr(self, key, state[key])
            # Checkpoints from before these were kept: every good step counted, the run began at 0.
            self.good_steps = state.get("good_steps", self.step - self.bad_steps)
            self.start_step = state.get("start_step", 0)
            if self.ema is not None and state.get("ema") is not None:
                self.ema = {k: v.to(self.device) for k, v in state["ema"].items()}
            elif self.ema is not None:
                log.warning("%s: holds no EMA; the EMA starts from the current weights", own)
                self._reset_ema()
            if state["world_size"] == self.dist.world_size:
                mine = state["ranks"][self.dist.rank]
                _set_rng_state(mine["rng"], self.generator, self.device)
                self.criterion._history = mine["loss_history"]
            else:
                log.warning("%s: saved by %d process(es), resumed by %d: random streams start afresh",
                            own, state["world_size"], self.dist.world_size)
            if self.batch_in_epoch and state["world_size"] != self.dist.world_size:
                self.batch_in_epoch = 0  # the shards differ: redo this epoch's position from its start
            return f"its own checkpoint (epoch {self.epoch}, step {self.step})"
        if run["resume_from"] is not None:
            # A fine-tune continues a finished run "for N more epochs"; a run still going is no base.
            path = self._finished_run_file("resume_from", "checkpoint.th")
            if not path.is_file():
                raise TrainingError(f"{path}: run.resume_from names no checkpoint (has that run started?)")
            state = _read_state(path, "run.resume_from")
            self._load_weights(state["model"], path)
            self._load_optimizer(state["optimizer"], path)
            self._apply_optim_config()
            self._reset_ema()
            # The epoch counter continues; the position in an epoch does not (new data).
            self.epoch, self.step = state["epoch"], state["step"]
            self.start_step = self.step
            return f"resume_from {path} (epoch {self.epoch})"
        if run["init_from"] is not None:
            path = self._finished_run_file("init_from", "model.th")
            try:
                source = load_model(path, config=self.cfg)
            except CheckpointError as exc:
                raise TrainingError(f"run.init_from: {exc}") from None
            self._load_weights(source.state_dict(), path)
            self._reset_ema()
            return f"init_from {path} (weights only)"
        return "scratch"

    def _check_same_start(self, origin: str) -> None:
        """Every rank reads the run dir itself: ranks that found different things (a run.root on each
        node's own disk) would train apart and then wait forever in a collective that no longer matches."""
        origins = distributed.gather_objects(origin)
        if len(set(origins)) > 1:
            found = "; ".join(f"rank {rank}: {o}" for rank, o in enumerate(origins))
            raise TrainingError(f"{self.dir}: the processes found different states to start from ({found}); "
                                f"run.root must be a folder every node sees (a shared filesystem)")

    # ------------------------------------------------------------ logging
    def _write_metrics(self, record: dict) -> None:
        if not self.dist.is_main:
            return
        line = json.dumps(record) + "\n"
        path = self.dir / "metrics.jsonl"
        with naming(path), open(path, "a") as f:
            f.write(line)
        self.metrics_bytes += len(line.encode())
        metric_log.mirror(self.cfg, self.dir, record)  # TensorBoard / W&B when run.tensorboard / run.wandb

    def _trim_metrics(self) -> None:
        path = self.dir / "metrics.jsonl"
        if self.dist.is_main and path.exists() and path.stat().st_size > self.metrics_bytes:
            with open(path, "r+b") as f:
                f.truncate(self.metrics_bytes)

    # ------------------------------------------------------------ signals
    def _on_signal(self, signum, frame) -> None:
        self._signal = signum
        log.warning("got %s: saving at the end of this step, then exiting with %d",
                    signal.Signals(signum).name, EXIT_PREEMPTED)

    @contextlib.contextmanager
    def _signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        old = {s: signal.signal(s, self._on_signal) for s in PREEMPT_SIGNALS}
        try:
            yield
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)

    # ------------------------------------------------------------ the loop
    def run(self, stop_after: int | None = None) -> int:
        """Train to ``optim.epochs``; ``stop_after`` (tests) acts as a preemption after that many steps."""
        finished = (self.dir / "done").is_file()
        # Every rank must see the same run dir: one that finds `done` where another does not would wait forever.
        self._check_same_start("a finished run" if finished else "an unfinished run")
        if finished:
            log.info("%s: finished already (found 'done')", self.dir)
            return EXIT_DONE
        with self._exclusive():
            if self._agreed((self.dir / "done").is_file()):  # another trainer finished it meanwhile
                log.info("%s: finished already (found 'done')", self.dir)
                return EXIT_DONE
            try:
                return self._run(stop_after)
            except AudioError as exc:  # a stem that changed since it was indexed, read by the loader
                raise TrainingError(f"data: {_one_line(exc)}") from None

    def _agreed(self, value):
        """Rank 0's ``value`` on every rank."""
        return distributed.gather_objects(value)[0]

    @contextlib.contextmanager
    def _exclusive(self):
        """Rank 0 holds the run dir's lock while the run lasts; when another trainer holds it, every rank stops."""
        with contextlib.ExitStack() as stack:
            busy = None
            if self.dist.is_main:
                try:
                    stack.enter_context(folder_lock(self.dir, "trainer"))
                except FolderBusy as exc:
                    busy = str(exc)
            busy = self._agreed(busy)
            if busy is not None:
                raise TrainingError(busy)
            yield

    def _run(self, stop_after: int | None) -> int:
        if self.dist.is_main:
            # Temporary files of a process killed while writing (labelnoise.atomic); under the lock
            # no one else is writing here.
            for stale in self.dir.glob(".*.tmp.*"):
                stale.unlink()
        origin = self.restore()
        self._check_same_start(origin)
        if self.dist.is_main:
            self.dir.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, self.dir / "config.yaml")
        self._trim_metrics()
        log.info("%s: starting from %s; %d optimizer steps per epoch, %d x %d x %d items each",
                 self.dir, origin, self.steps_per_epoch, self.batch_size, self.dist.world_size, self.accumulate)
        epochs = self.cfg["optim"]["epochs"]
        with self._signals():
            while self.epoch < epochs:
                if not self._train_epoch(stop_after):
                    self.save_checkpoint()
                    return EXIT_PREEMPTED
                self.epoch += 1
                self.batch_in_epoch = 0
                self._validate()
                self.save_checkpoint()
        if self.step > self.start_step and self.good_steps == 0:
            raise TrainingError(
                f"{self.dir}: every one of the {self.step - self.start_step} steps had a non-finite loss or "
                f"gradient and was skipped, so nothing was trained and no model.th is written; look for "
                f"stems with extreme levels in {self.cfg['data']['root']} or lower optim.lr")
        if self.dist.is_main:
            save_model(self.model, self.dir / "model.th", config=self.cfg, epoch=self.epoch, step=self.step)
            if self.ema is not None:
                averaged = build_model(self.cfg)
                averaged.load_state_dict(self.ema)
                save_model(averaged, self.dir / "model_ema.th", config=self.cfg, epoch=self.epoch,
                           step=self.step, ema=self.ema_decay)
            write_text(self.dir / "done", f"epoch {self.epoch} step {self.step} bad_steps {self.bad_steps}\n")
        distributed.barrier()
        log.info("%s: done (%d epochs, %d steps, %d skipped as non-finite)", self.dir, self.epoch, self.step,
                 self.bad_steps)
        return EXIT_DONE

    def _loader(self):
        """This epoch's loader from the current position, and the dataset indices of its batches."""
        self.sampler.set_epoch(self.epoch)
        sampler = _SkipSampler(self.sampler, self.batch_in_epoch * self.batch_size)
        workers = self.cfg["data"]["workers"]
        loader = torch.utils.data.DataLoader(self.dataset, batch_size=self.batch_size, sampler=sampler,
                                             num_workers=workers, drop_last=True,
                                             worker_init_fn=_ignore_preemption if workers else None,
                                             pin_memory=self.device.type == "cuda",
                                             persistent_workers=False, prefetch_factor=4 if workers else None)
        # The sampler is deterministic: the main process knows which items each batch holds.
        indices = list(sampler)
        batches = (indices[k:k + self.batch_size] for k in range(0, len(indices), self.batch_size))
        return zip(loader, batches)

    def _noisy(self, indices: list[int]) -> torch.Tensor | None:
        """(B, S) bool: whether each stem of these items is noisy (from the data's noise_labels.json)."""
        if self.noise_labels is None:
            return None
        rows = []
        for index in indices:
            info = self.dataset.item_info(index)
            rows.append([self.noise_labels.get(info[s]["track"], {}).get(s, {}).get("noisy", False)
                         for s in self.sources])
        return torch.tensor(rows, dtype=torch.bool)

    def _train_epoch(self, stop_after: int | None) -> bool:
        """One epoch from the current position; False when it stopped early (signal or ``stop_after``)."""
        self.model.train()
        first = self.batch_in_epoch // self.accumulate
        batches = self._loader()
        bar = progress_bar(total=self.steps_per_epoch, initial=first, desc=f"epoch {self.epoch}", unit="step",
                        disable=not self.dist.is_main, leave=False, dynamic_ncols=True)
        epoch_sums, count = None, 0
        try:
            for _ in range(first, self.steps_per_epoch):
                record, sums = self._train_step(batches)
                stop, save_due = record.pop("_stop"), record.pop("_save")
                self._write_metrics(record)
                if not record["skipped"]:
                    epoch_sums = sums if epoch_sums is None else epoch_sums + sums
                    count += 1
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.4f}", kept=f"{record['kept_mean']:.2f}",
                                items_s=f"{record['items_per_s']:.1f}")
                if stop or (stop_after is not None and self.step >= stop_after):
                    return False
                if save_due:
                    self.save_checkpoint()
        finally:
            bar.close()
            del batches
        if count:
            # Over the steps this process ran (a resumed epoch: from where it resumed).
            record = {"kind": "epoch", "epoch": self.epoch, "step": self.step, "steps": count,
                      "bad_steps": self.bad_steps, **self._summary(epoch_sums)}
            self._write_metrics(record)
        return True

    # Slots of the vector summed over micro-batches and ranks at every step.
    def _slots(self) -> dict:
        S = len(self.sources)
        names = [("bad", 1), ("batches", 1), ("loss", 1), ("per_source", S), ("kept", S),
                 ("noisy_dropped", 1), ("dropped", 1), ("noisy_kept", 1), ("kept_n", 1), ("stop", 1), ("save", 1)]
        slots, at = {}, 0
        for name, size in names:
            slots[name] = slice(at, at + size)
            at += size
        return slots

    def _summary(self, sums: torch.Tensor) -> dict:
        """Means of a summed vector: loss, per source loss and kept fraction, noisy shares."""
        sl = self._slots()
        good = max(1.0, float(sums[sl["batches"]]) - float(sums[sl["bad"]]))
        n = max(1.0, float(sums[sl["batches"]]))
        out = {"loss": float(sums[sl["loss"]]) / good,
               "loss_per_source": dict(zip(self.sources, (sums[sl["per_source"]] / n).tolist())),
               "kept": dict(zip(self.sources, (sums[sl["kept"]] / n).tolist()))}
        if self.noise_labels is not None:
            dropped, kept = float(sums[sl["dropped"]]), float(sums[sl["kept_n"]])
            # The direct measure of truncation: noisy stems should be over-represented among the dropped.
            out["noisy_share"] = {
                "dropped": float(sums[sl["noisy_dropped"]]) / dropped if dropped else None,
                "kept": float(sums[sl["noisy_kept"]]) / kept if kept else None}
        return out

    def _train_step(self, batches) -> tuple[dict, torch.Tensor]:
        """``accumulate`` micro-batches and one optimizer step (or a counted skip).

        Returns the step's metrics record and its summed vector (for the epoch's means).
        """
        sl = self._slots()
        start = time.perf_counter()
        wait = 0.0
        sums = torch.zeros(sl["save"].stop, dtype=torch.float64)
        for micro in range(self.accumulate):
            t = time.perf_counter()
            sources, indices = next(batches)
            sources = sources.to(self.device, non_blocking=True)
            wait += time.perf_counter() - t
            noisy = self._noisy(indices)
            with torch.no_grad():
                for aug in self.augment:
                    if isinstance(aug, Remix):
                        sources, perm = aug(sources, return_perm=True)
                        if noisy is not None:  # stem (b, s) now comes from item perm[b, s]
                            noisy = noisy.gather(0, perm.cpu())
                    else:
                        sources = aug(sources)
            mix = sources.sum(dim=1)
            # No gradient all-reduce on accumulation steps: only the last one syncs.
            sync = micro == self.accumulate - 1
            ctx = self.ddp.no_sync() if self.dist.enabled and not sync else contextlib.nullcontext()
            with ctx:
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                    estimate = self.ddp(mix)
                out = self.criterion(estimate.float(), sources)
                (out.loss / self.accumulate).backward()
            # A NaN in the estimate can hide behind truncation (NaN scores are all dropped): check both.
            finite = bool(torch.isfinite(out.loss)) and bool(torch.isfinite(estimate).all())
            sums[sl["batches"]] += 1
            sums[sl["bad"]] += 0 if finite else 1
            sums[sl["loss"]] += out.loss.item() if finite else 0.0
            sums[sl["per_source"]] += out.per_source.cpu().double().nan_to_num(0.0)
            sums[sl["kept"]] += out.kept.cpu().double()
            if noisy is not None:
                keep = out.keep.cpu()
                sums[sl["noisy_dropped"]] += float((noisy & ~keep).sum())
                sums[sl["dropped"]] += float((~keep).sum())
                sums[sl["noisy_kept"]] += float((noisy & keep).sum())
                sums[sl["kept_n"]] += float(keep.sum())
            self.batch_in_epoch += 1
        sums[sl["stop"]] = 1.0 if self._signal is not None else 0.0
        save_due = (self.dist.is_main and
                    time.monotonic() - self._last_save > 60 * self.cfg["run"]["save_every_minutes"])
        sums[sl["save"]] = 1.0 if save_due else 0.0
        distributed.all_reduce(sums)  # one collective per step; flags: > 0 means "on some rank"
        clip = self.cfg["optim"]["clip_grad"]
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), clip if clip > 0 else float("inf"))
        skipped = float(sums[sl["bad"]]) > 0 or not bool(torch.isfinite(grad_norm))
        if skipped:
            self.bad_steps += 1
            self.bad_in_row += 1
            log.warning("step %d: non-finite loss or gradient, step skipped (%d in a row, %d in all)",
                        self.step, self.bad_in_row, self.bad_steps)
            limit = self.cfg["train"]["max_bad_steps"]
            if self.bad_in_row >= limit:
                raise TrainingError(f"{self.dir}: {self.bad_in_row} steps in a row had a non-finite loss or "
                                    f"gradient (train.max_bad_steps = {limit}); the run diverged, lower "
                                    f"optim.lr or set optim.clip_grad, then restart from its last checkpoint")
        else:
            self.optimizer.step()
            if self.ema is not None:
                self._update_ema()
            self.bad_in_row = 0
            self.good_steps += 1
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        elapsed = time.perf_counter() - start
        items = self.batch_size * self.accumulate * self.dist.world_size
        record = {"kind": "step", "epoch": self.epoch, "step": self.step, **self._summary(sums),
                  "lr": self.optimizer.param_groups[0]["lr"], "grad_norm": float(grad_norm),
                  "items_per_s": items / elapsed, "data_wait": wait / elapsed,
                  "skipped": skipped, "bad_steps": self.bad_steps}
        if skipped:
            record["loss"] = float("nan")
        record["kept_mean"] = sum(record["kept"].values()) / len(self.sources)
        if self.device.type == "cuda":
            record["gpu_mem_gb"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        record["_stop"], record["_save"] = float(sums[sl["stop"]]) > 0, float(sums[sl["save"]]) > 0
        return record, sums

    def _validate(self) -> None:
        valid = self.cfg["valid"]
        if valid["tracks"] is None or self.epoch % valid["every"]:
            return
        if self.dist.is_main:
            from .evaluation import evaluate_model  # validation only

            self.model.eval()
            report = evaluate_model(self.model, valid["tracks"], device=self.device, shifts=valid["shifts"],
                                    overlap=valid["overlap"])
            self.model.train()
            sdr = report["summary"]["mean"]
            self._write_metrics({"kind": "valid", "epoch": self.epoch, "step": self.step, "sdr": sdr,
                                 "summary": report["summary"]})
            log.info("epoch %d: validation SDR %.3f dB", self.epoch, sdr)
            if self.best_sdr is None or sdr > self.best_sdr:
                self.best_sdr = sdr
                save_model(self.model, self.dir / "best.th", config=self.cfg, epoch=self.epoch, sdr=sdr)
        distributed.barrier()


def train(cfg: dict, device: str | None = None, stop_after: int | None = None) -> int:
    """Join the process group (torchrun's env), train, leave it; returns the exit code."""
    info = distributed.setup(device)
    try:
        return Trainer(cfg, info).run(stop_after=stop_after)
    finally:
        distributed.cleanup()


def setup_logging(rank: int) -> None:
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s")


def env_rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)
