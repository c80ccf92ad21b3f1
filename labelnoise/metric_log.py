"""TensorBoard and Weights & Biases mirrors of a run's ``metrics.jsonl`` (both optional).

``metrics.jsonl`` stays the record; every record written to it is also sent,
flattened to scalars, to the backends the config turns on (rank 0 only, as
the file):

    run.tensorboard: auto   # auto: on when the tensorboard package is there (one info line when not);
                            # true: required (a config error without it); false: off
    run.wandb: false        # the same three values; off by default

A record ``{"kind": "step", "step": 12, "loss": 0.3, "kept": {"vocals": 0.7},
"noisy_entries": {"noisy_dropped": 6, "dropped": 10, ...}, "lr": ...}`` becomes
the scalars ``step/loss``, ``step/kept/vocals``, ``step/noisy_entries/dropped``,
``step/lr`` ... at step 12, and the shares derived from the counts
(``step/noisy_share/dropped``); epoch means are ``epoch/...``, validation
``valid/sdr`` and ``valid/summary/per_source/<source>/mean``. TensorBoard's
event files go in the run dir itself (``tensorboard --logdir runs`` shows every stage), and a
resumed run purges the events from its first step on, as ``metrics.jsonl``
is cut back. W&B runs offline unless ``WANDB_MODE`` says otherwise (there is
no network on most training nodes; ``wandb sync`` uploads later), its files
under the run dir, one W&B run per run dir (resumed, not duplicated).
"""
from __future__ import annotations

import atexit
import hashlib
import importlib.util
import logging
import math
import os
from pathlib import Path

from .files import METRICS_FILE
from .report_stats import noisy_share

log = logging.getLogger(__name__)

CHOICES = ("auto", True, False)
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}  # config key -> package
SKIPPED = ("kind", "epoch", "step")


def unavailable(run: dict) -> str | None:
    """Why the ``run`` section cannot be honoured (a backend set to true without its package), or None."""
    for key, package in PACKAGES.items():
        value = run.get(key, False)
        if value not in CHOICES or isinstance(value, int) and not isinstance(value, bool):
            return f"run.{key} must be auto, true or false, got {value!r}"
        if value is True and importlib.util.find_spec(package) is None:
            return (f"run.{key} is true but the {package} package is not installed "
                    f"(pip install 'mdx-labelnoise[{key}]', or set run.{key}: auto or false)")
    return None


def enabled(run: dict) -> list[str]:
    """The backends to write, saying once which ``auto`` ones are off for want of their package."""
    on = []
    for key, package in PACKAGES.items():
        value = run.get(key, False)
        if value is False:
            continue
        if importlib.util.find_spec(package) is None:
            log.info("run.%s auto: the %s package is not installed (pip install 'mdx-labelnoise[%s]'); "
                     "metrics go to %s only", key, package, key, METRICS_FILE)
            continue
        on.append(key)
    return on


def scalars(record: dict) -> dict[str, float]:
    """``{"kind/path/to/value": number}`` of a metrics record (booleans, None and NaN left out)."""
    out: dict[str, float] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(f"{prefix}/{key}", sub)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[prefix] = float(value)

    kind = record.get("kind", "record")
    for key, value in record.items():
        if key not in SKIPPED:
            walk(f"{kind}/{key}", value)
    if "noisy_entries" in record:
        walk(f"{kind}/noisy_share", noisy_share(record))
    return out


class MetricLog:
    """The writers of one run dir; :meth:`write` takes each metrics record."""

    def __init__(self, cfg: dict, run_dir: Path, first_step: int):
        self.tensorboard = self.wandb = None
        backends = enabled(cfg["run"])
        if "tensorboard" in backends:
            from torch.utils.tensorboard import SummaryWriter
            # Events at or after this step come from a run that was cut short: metrics.jsonl dropped them too.
            self.tensorboard = SummaryWriter(str(run_dir), purge_step=first_step)
        if "wandb" in backends:
            import wandb
            ident = hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]
            self.wandb = wandb.init(project=os.environ.get("WANDB_PROJECT", "mdx-labelnoise"),
                                    name=cfg["run"]["name"], id=ident, resume="allow", dir=str(run_dir),
                                    config=cfg, mode=os.environ.get("WANDB_MODE", "offline"))

    def write(self, record: dict) -> None:
        values = scalars(record)
        step = int(record.get("step", 0))
        if self.tensorboard is not None:
            for tag, value in values.items():
                self.tensorboard.add_scalar(tag, value, step)
            if record.get("kind") != "step":
                self.tensorboard.flush()
        if self.wandb is not None and values:
            self.wandb.log(values, step=step)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None


_open: dict[Path, MetricLog] = {}


def mirror(cfg: dict, run_dir: Path, record: dict) -> None:
    """Send ``record`` (just written to ``run_dir/metrics.jsonl``) to the run's backends, opened at first use."""
    key = Path(run_dir)
    if key not in _open:
        _open[key] = MetricLog(cfg, key, first_step=int(record.get("step", 0)))
    _open[key].write(record)


def close(run_dir: Path | None = None) -> None:
    """Flush and close the writers of ``run_dir`` (every open one by default; also run at exit)."""
    for key in [Path(run_dir)] if run_dir is not None else list(_open):
        writer = _open.pop(key, None)
        if writer is not None:
            writer.close()


atexit.register(close)
