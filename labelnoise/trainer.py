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
weights only), else scratch (labelnoise.run_state, which also writes the run
dir's files).

Exit codes of :meth:`Trainer.run` (and of ``train.py``):
``EXIT_DONE`` (0) the run is finished; ``EXIT_PREEMPTED`` (3) SIGUSR1 or
SIGTERM arrived, the state was saved and the same command continues it
(the sbatch scripts requeue on 3). A run that cannot go on raises
TrainingError: data that cannot be read, a checkpoint that cannot be used,
a run that diverged, and a run whose every step was skipped as non-finite
(it writes no ``model.th``: there is no trained model to write).

Who does what: this module builds the objects and holds the loop;
labelnoise.run_state the checkpoint, the resume order and the run dir's files;
labelnoise.step_stats what each step measured; labelnoise.ema the average of
the weights; labelnoise.losses the loss (with its own state_dict()).
"""
from __future__ import annotations

import contextlib
import json
import logging
import random
import signal
import threading
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from . import distributed
from .audio import AudioError
from .augment import Remix
from .config import build_model, run_dir
from .data import EpochSampler
from .ema import WeightAverage
from .files import DONE_FILE, LABELS_FILE, MODEL_FILE
from .losses import ReconstructionLoss
from .progress import bar as progress_bar
from .run_state import RunState, TrainingError
from .step_stats import NoiseLabels, StepStats
from .train_data import PREEMPT_SIGNALS, build_augment, build_dataset, epoch_batches

log = logging.getLogger(__name__)

EXIT_DONE = 0
EXIT_PREEMPTED = 3
__all__ = ["EXIT_DONE", "EXIT_PREEMPTED", "Trainer", "TrainingError", "build_augment", "build_dataset", "train"]


def _one_line(exc: BaseException) -> str:
    """The error itself: a DataLoader worker's error comes back with the worker's traceback in its text."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    last = lines[-1] if lines else type(exc).__name__
    return last.removeprefix(f"{type(exc).__module__}.{type(exc).__name__}: ")


class _Preemption:
    """SIGUSR1/SIGTERM while training: noted, so the step in progress ends, the state is saved and the run exits 3."""

    def __init__(self):
        self.signum = None
        self._old = {}

    def _note(self, signum, frame) -> None:
        self.signum = signum
        log.warning("got %s: saving at the end of this step, then exiting with %d",
                    signal.Signals(signum).name, EXIT_PREEMPTED)

    def __enter__(self) -> "_Preemption":
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            self._old = {s: signal.signal(s, self._note) for s in PREEMPT_SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)
        self._old = {}


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
            _compile_network(self.model, cfg)
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(self.model, device_ids=ids)
        else:
            self.ddp = self.model
        # optim.ema > 0: an exponential moving average of the weights, written as model_ema.th.
        self.ema = WeightAverage(self.model, optim["ema"]) if optim["ema"] > 0 else None
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=optim["lr"], betas=tuple(optim["betas"]),
                                          weight_decay=optim["weight_decay"])
        self.criterion = ReconstructionLoss.from_config(optim)
        item_transform, self.augment = build_augment(cfg, self.generator)
        self.augment.to(self.device)
        self.dataset = build_dataset(cfg, item_transform)
        self.sampler = EpochSampler(self.dataset, rank=self.dist.rank, world_size=self.dist.world_size,
                                    seed=run["seed"])
        labels = Path(cfg["data"]["root"]) / LABELS_FILE
        # Ground truth of synthetic sets (labelnoise.synth): which stems truncation drops, noisy or clean.
        self.noise = (NoiseLabels(json.loads(labels.read_text()), self.dataset, self.sources)
                      if labels.is_file() else None)
        self.batch_size, self.accumulate = optim["batch_size"], optim["accumulate"]
        self.steps_per_epoch = len(self.sampler) // self.batch_size // self.accumulate
        if self.steps_per_epoch == 0:
            raise TrainingError(
                f"{cfg['data']['root']}: {len(self.dataset)} items give no optimizer step with "
                f"{self.dist.world_size} process(es) x batch {self.batch_size} x accumulate {self.accumulate}")

        # What a checkpoint saves and restores; self.progress is where the run stands.
        self.state = RunState(cfg, self.dist, self.dir, self.model, self.optimizer, self.criterion, self.ema,
                              self.generator)
        self.progress = self.state.progress
        self._preemption = _Preemption()

    # ------------------------------------------------------------ the loop
    def run(self, stop_after: int | None = None) -> int:
        """Train to ``optim.epochs``; ``stop_after`` (tests) acts as a preemption after that many steps."""
        finished = self.state.finished()
        # Every rank must see the same run dir: one that finds `done` where another does not would wait forever.
        self.state.check_same_start("a finished run" if finished else "an unfinished run")
        if finished:
            log.info("%s: finished already (found '%s')", self.dir, DONE_FILE)
            return EXIT_DONE
        with self.state.exclusive():
            if self.state.agreed(self.state.finished()):  # another trainer finished it meanwhile
                log.info("%s: finished already (found '%s')", self.dir, DONE_FILE)
                return EXIT_DONE
            try:
                return self._run(stop_after)
            except AudioError as exc:  # a stem that changed since it was indexed, read by the loader
                raise TrainingError(f"data: {_one_line(exc)}") from None

    def _run(self, stop_after: int | None) -> int:
        p = self.progress
        origin = self.state.begin()
        log.info("%s: starting from %s; %d optimizer steps per epoch, %d x %d x %d items each",
                 self.dir, origin, self.steps_per_epoch, self.batch_size, self.dist.world_size, self.accumulate)
        epochs = self.cfg["optim"]["epochs"]
        with self._preemption:
            while p.epoch < epochs:
                if not self._train_epoch(stop_after):
                    self.state.save()
                    return EXIT_PREEMPTED
                p.epoch += 1
                p.batch_in_epoch = 0
                self._validate()
                self.state.save()
        if p.step > p.start_step and p.good_steps == 0:
            raise TrainingError(
                f"{self.dir}: every one of the {p.step - p.start_step} steps had a non-finite loss or "
                f"gradient and was skipped, so nothing was trained and no {MODEL_FILE} is written; look for "
                f"stems with extreme levels in {self.cfg['data']['root']} or lower optim.lr")
        self.state.finish()
        log.info("%s: done (%d epochs, %d steps, %d skipped as non-finite)", self.dir, p.epoch, p.step,
                 p.bad_steps)
        return EXIT_DONE

    def _train_epoch(self, stop_after: int | None) -> bool:
        """One epoch from the current position; False when it stopped early (signal or ``stop_after``)."""
        p = self.progress
        self.model.train()
        first = p.batch_in_epoch // self.accumulate
        batches = epoch_batches(self.dataset, self.sampler, p.epoch, p.batch_in_epoch * self.batch_size,
                                self.batch_size, self.cfg["data"]["workers"], pin=self.device.type == "cuda")
        bar = progress_bar(total=self.steps_per_epoch, initial=first, desc=f"epoch {p.epoch}", unit="step",
                           disable=not self.dist.is_main, leave=False, dynamic_ncols=True)
        epoch, count = None, 0
        try:
            for _ in range(first, self.steps_per_epoch):
                record, stats = self._train_step(batches)
                self.state.write_metrics(record)
                if not record["skipped"]:
                    epoch = stats if epoch is None else epoch + stats
                    count += 1
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.4f}", kept=f"{record['kept_mean']:.2f}",
                                items_s=f"{record['items_per_s']:.1f}")
                if stats.raised("stop") or (stop_after is not None and p.step >= stop_after):
                    return False
                if stats.raised("save"):
                    self.state.save()
        finally:
            bar.close()
            del batches
        if count:
            # Over the steps this process ran (a resumed epoch: from where it resumed).
            self.state.write_metrics({"kind": "epoch", "epoch": p.epoch, "step": p.step, "steps": count,
                                      "bad_steps": p.bad_steps, **epoch.summary()})
        return True

    def _train_step(self, batches) -> tuple[dict, StepStats]:
        """``accumulate`` micro-batches and one optimizer step (or a counted skip): its record and its sums."""
        p = self.progress
        start, wait = time.perf_counter(), 0.0
        stats = StepStats(self.sources, labelled=self.noise is not None)
        for micro in range(self.accumulate):
            t = time.perf_counter()
            sources, indices = next(batches)
            sources = sources.to(self.device, non_blocking=True)
            wait += time.perf_counter() - t
            sources, noisy = self._augment(sources, None if self.noise is None else self.noise.of(indices))
            mix = sources.sum(dim=1)
            # No gradient all-reduce on accumulation steps: only the last one syncs.
            sync = micro == self.accumulate - 1
            with self.ddp.no_sync() if self.dist.enabled and not sync else contextlib.nullcontext():
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                    estimate = self.ddp(mix)
                out = self.criterion(estimate.float(), sources)
                (out.loss / self.accumulate).backward()
            # A NaN in the estimate can hide behind truncation (NaN scores are all dropped): check both.
            stats.add(out, finite=bool(torch.isfinite(out.loss)) and bool(torch.isfinite(estimate).all()),
                      noisy=noisy)
            p.batch_in_epoch += 1
        stats.flag("stop", self._preemption.signum is not None)
        stats.flag("save", self.state.save_due())
        stats.all_reduce()  # one collective per step
        clip = self.cfg["optim"]["clip_grad"]
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), clip if clip > 0 else float("inf"))
        skipped = stats.raised("bad") or not bool(torch.isfinite(grad_norm))
        if skipped:
            self._count_bad_step()
        else:
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update(self.model)
            p.bad_in_row = 0
            p.good_steps += 1
        self.optimizer.zero_grad(set_to_none=True)
        p.step += 1
        elapsed = time.perf_counter() - start
        items = self.batch_size * self.accumulate * self.dist.world_size
        record = {"kind": "step", "epoch": p.epoch, "step": p.step, **stats.summary(),
                  "lr": self.optimizer.param_groups[0]["lr"], "grad_norm": float(grad_norm),
                  "items_per_s": items / elapsed, "data_wait": wait / elapsed,
                  "skipped": skipped, "bad_steps": p.bad_steps}
        if skipped:
            record["loss"] = float("nan")
        record["kept_mean"] = sum(record["kept"].values()) / len(self.sources)
        if self.device.type == "cuda":
            record["gpu_mem_gb"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        return record, stats

    @torch.no_grad()
    def _augment(self, sources: torch.Tensor, noisy: torch.Tensor | None):
        """The batch augmentations; ``noisy`` (B, S) follows each stem through Remix's shuffle."""
        for aug in self.augment:
            if isinstance(aug, Remix):
                sources, perm = aug(sources, return_perm=True)
                if noisy is not None:  # stem (b, s) now comes from item perm[b, s]
                    noisy = noisy.gather(0, perm.cpu())
            else:
                sources = aug(sources)
        return sources, noisy

    def _count_bad_step(self) -> None:
        p = self.progress
        p.bad_steps += 1
        p.bad_in_row += 1
        log.warning("step %d: non-finite loss or gradient, step skipped (%d in a row, %d in all)",
                    p.step, p.bad_in_row, p.bad_steps)
        limit = self.cfg["train"]["max_bad_steps"]
        if p.bad_in_row >= limit:
            raise TrainingError(f"{self.dir}: {p.bad_in_row} steps in a row had a non-finite loss or "
                                f"gradient (train.max_bad_steps = {limit}); the run diverged, lower "
                                f"optim.lr or set optim.clip_grad, then restart from its last checkpoint")

    def _validate(self) -> None:
        valid = self.cfg["valid"]
        if valid["tracks"] is None or self.progress.epoch % valid["every"]:
            return
        if self.dist.is_main:
            from .evaluation import evaluate_model  # validation only

            self.model.eval()
            report = evaluate_model(self.model, valid["tracks"], device=self.device, shifts=valid["shifts"],
                                    overlap=valid["overlap"])
            self.model.train()
            sdr = report["summary"]["mean"]
            self.state.write_metrics({"kind": "valid", "epoch": self.progress.epoch, "step": self.progress.step,
                                      "sdr": sdr, "summary": report["summary"]})
            log.info("epoch %d: validation SDR %.3f dB", self.progress.epoch, sdr)
            self.state.save_best(sdr)
        distributed.barrier()


def _compile_network(model: nn.Module, cfg: dict) -> None:
    # The network between the STFT and the iSTFT only: Inductor generates no complex
    # kernels, and a whole-model compile did not finish on a CPU. In place, so the
    # parameter names (checkpoints, DDP, the EMA) stay the same.
    compile_network = getattr(model, "compile_network", None)
    if compile_network is None:
        raise TrainingError(f"train.compile: model.arch {cfg['model'].get('arch')!r} has no "
                            f"compile_network(); set train.compile=false")
    compile_network()


def train(cfg: dict, device: str | None = None, stop_after: int | None = None) -> int:
    """Join the process group (torchrun's env), train, leave it; returns the exit code."""
    info = distributed.setup(device)
    try:
        return Trainer(cfg, info).run(stop_after=stop_after)
    finally:
        distributed.cleanup()
