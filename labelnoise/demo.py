"""The whole method end to end on generated data, with a report: what ``make demo`` runs.

    python -m labelnoise.demo                                  # about 8 minutes on 2 idle CPU cores
    python -m labelnoise.demo --tracks 64 --seconds 30 --epochs-scale 4 --device cuda
    python -m labelnoise.demo --quick --out /tmp/demo/runs --data /tmp/demo/data   # a smoke run
    python -m labelnoise.report runs/demo                      # the report again, from the files

It is the pipeline's runner (``python -m labelnoise.pipeline run all
--preset demo ...``, labelnoise.runner) on data it generates first:

1. Data (``--data``, default data/demo): ``train/``, a synthetic label-noise
   set (``labelnoise.synth``, 30 % noisy stems, 16 kHz, the truth in
   ``noise_labels.json``); ``clean/``, its clean twin (same seed, no noise);
   ``test/``, a clean test set from another seed. A folder that holds
   anything else is refused, never touched.
2. Every stage of the method with preset ``demo`` (configs/demo/: MaskNet
   at 16 kHz; steps 1-3 rank truncation by relative error, ``--trunc-by``;
   the filters' threshold rule ``--threshold``, default ``auto``), then the
   arms ``baseline`` (plain L1 on the same noisy data) and ``clean`` (plain
   L1 on the clean twin), each with the budget of steps 1-3.
3. After every stage that makes a model: the challenge SDR on the test set,
   cached next to the model.
4. ``--out``/report.md and report.html (``labelnoise.report``).

The same command again skips what is finished and continues an interrupted
stage; a run folder made with other settings is refused. ``--epochs-scale
F`` multiplies every stage's epochs (a fine-tune still runs at least one
epoch past the run it continues); ``--quick`` runs one short epoch per
stage, to check the machinery, not the method. On your own stems, run the
pipeline itself: ``python -m labelnoise.pipeline run all --data TRAIN
--test TEST --arms baseline --report``.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from . import pipeline, runner
from .files import LABELS_FILE, SYNTH_FILE

log = logging.getLogger(__name__)

LABEL = "demo"
PRESET = pipeline.PRESETS["demo"]   # configs, threshold, overrides and default folders


@dataclass(frozen=True)
class Settings:
    """What the demo's data and runs depend on."""
    tracks: int = 24
    seconds: float = 16.0
    test_tracks: int = 16           # paired differences of ~0.2 dB need this many to stand out
    noise_rate: float = 0.3
    seed: int = 1
    samplerate: int = 16000
    render: str = "sampled"         # synth backend: sampled instruments playing generated songs, or sines
    epochs_scale: float = 1.0
    quick: bool = False
    threshold: str = PRESET.threshold
    trunc_by: str = "relative"      # what the preset's part1 override says
    configs: str = PRESET.configs
    overrides: tuple[str, ...] = ()

    @property
    def test_seed(self) -> int:
        return self.seed + 1000  # another seed: no test song is a training song

    def data_sets(self, data: Path) -> dict[str, dict]:
        """The three synthetic sets: folder and generator arguments."""
        common = dict(seconds=self.seconds, samplerate=self.samplerate, render=self.render)
        return {
            "train": dict(folder=data / "train", tracks=self.tracks, noise_rate=self.noise_rate,
                          seed=self.seed, **common),
            "clean": dict(folder=data / "clean", tracks=self.tracks, noise_rate=0.0, seed=self.seed, **common),
            "test": dict(folder=data / "test", tracks=self.test_tracks, noise_rate=0.0,
                         seed=self.test_seed, **common),
        }


def layout_for(settings: Settings, out: Path, data: Path) -> pipeline.Layout:
    """Preset demo with these settings: the method and both arms."""
    trunc = () if settings.trunc_by == "relative" else (f"part1:optim.trunc_by={settings.trunc_by}",)
    return replace(PRESET, configs=settings.configs, data=str(data / "train"), clean=str(data / "clean"),
                   runs=str(out), pools=str(data), threshold=settings.threshold,
                   overrides=(*PRESET.overrides, *trunc, *settings.overrides), arms=tuple(pipeline.ARMS),
                   epochs_scale=settings.epochs_scale, quick=settings.quick)


# ---------------------------------------------------------------- data

def synth_params_match(folder: Path, spec: dict) -> tuple[bool, str]:
    """Whether ``folder`` holds the set ``spec`` describes; else the first difference, in words."""
    from .synth import LABELS_FILE, PARAMS_FILE

    params_path = folder / PARAMS_FILE
    if not (params_path.is_file() and (folder / LABELS_FILE).is_file()):
        return False, ""
    params = json.loads(params_path.read_text())
    want = {"seed": spec["seed"], "seconds": spec["seconds"], "samplerate": spec["samplerate"],
            "noise_rate": spec["noise_rate"], "tracks": spec["tracks"]}
    have = {**{k: params.get(k) for k in want}, "tracks": len(params.get("tracks", []))}
    for key in want:
        if float(have[key]) != float(want[key]):
            return False, f"{key} {have[key]} where the demo asks for {want[key]}"
    render = params.get("render", "sine")  # sets made before there was a choice of backend are sine sets
    if render != spec.get("render", "sine"):
        return False, f"render {render} where the demo asks for {spec.get('render', 'sine')}"
    return True, ""


def refuse_other_data(folder: Path, difference: str) -> None:
    """A folder the generator would write into that holds something else: an error, the folder untouched."""
    if difference:
        what = f"holds other data ({difference})"
    else:
        what = (f"holds other data (not a synthetic set this project made: no complete {SYNTH_FILE} and "
                f"{LABELS_FILE})")
    raise pipeline.PipelineError(
        f"{folder}: {what}; it is left as it is. Give --data a new or empty folder for the generated sets; "
        f"to run the method on your own stems: python -m labelnoise.pipeline run all --data YOUR_TRACKS "
        f"--test YOUR_TEST_TRACKS --arms baseline --report")


def make_set(spec: dict, *, kinds: dict | None = None) -> bool:
    """Generate one synthetic set unless it is there already; returns whether it was made."""
    from .synth import generate

    folder = spec["folder"]
    ok, difference = synth_params_match(folder, spec)
    if ok:
        return False
    if difference or (folder.exists() and any(folder.iterdir())):
        refuse_other_data(folder, difference)
    generate(folder, tracks=spec["tracks"], seconds=spec["seconds"], noise_rate=spec["noise_rate"],
             seed=spec["seed"], samplerate=spec["samplerate"], kinds=kinds, progress=False,
             render=spec.get("render", "sine"))
    return True


def make_data(settings: Settings, data: Path) -> int:
    """Generate the sets not there yet; returns how many were made. A set made otherwise is an error."""
    return sum(make_set(spec) for spec in settings.data_sets(data).values())


# ---------------------------------------------------------------- the run

def run(settings: Settings, out: Path, data: Path, device: str = "cpu", python: str = sys.executable,
        report: bool = True, threads: int | None = None) -> dict:
    """Make the data, run every stage and score not done yet, write the report; returns the manifest."""
    out, data = Path(out), Path(data)
    say = lambda text: print(text, flush=True)  # noqa: E731
    layout = layout_for(settings, out, data)
    runner.check_runs(out, layout)  # before any data is made
    chain = pipeline.stages("all", layout)
    say(f"demo: {settings.tracks} tracks x {settings.seconds:g} s, {settings.noise_rate:.0%} noisy stems; "
        f"{settings.test_tracks} test tracks; {len(chain)} stages on {device}; logs in {out / runner.LOGS_DIR}")
    t = time.monotonic()
    made = make_data(settings, data)
    if made:
        say(f"data: made {made} synthetic set(s) in {data} in {runner.clock_text(time.monotonic() - t)}")
    else:
        say(f"data: done already ({data}/train, clean, test)")
    test = data / "test"
    test_seconds = settings.test_tracks * settings.seconds
    jobs = runner.plan(chain, layout, test_seconds=test_seconds, device=device)
    return runner.run(jobs, layout, test=test, device=device, threads=threads, python=python, report=report,
                      label=LABEL, extra={"synthetic": json.loads(json.dumps(settings.__dict__))})


# ---------------------------------------------------------------- command line

def parse_args(argv=None) -> argparse.Namespace:
    d = Settings()
    p = argparse.ArgumentParser(prog="python -m labelnoise.demo", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tracks", type=int, default=d.tracks, help=f"noisy training tracks (default {d.tracks})")
    p.add_argument("--seconds", type=float, default=d.seconds, help=f"seconds per track (default {d.seconds:g})")
    p.add_argument("--test-tracks", type=int, default=d.test_tracks, help=f"test tracks (default {d.test_tracks})")
    p.add_argument("--noise-rate", type=float, default=d.noise_rate,
                   help=f"share of noisy stems in the training set (default {d.noise_rate})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"data seed; the test set uses seed + 1000 "
                                                             f"(default {d.seed})")
    p.add_argument("--render", choices=("sampled", "sine"), default=d.render,
                   help="the generator's backend: SoundFont instruments playing generated songs (sampled, "
                        "the default) or sines, clicks and noise (sine: fast)")
    p.add_argument("--epochs-scale", type=float, default=d.epochs_scale,
                   help="multiply every stage's epochs (default 1)")
    p.add_argument("--quick", action="store_true",
                   help="one short epoch per stage: checks the machinery in a minute or two, learns nothing")
    p.add_argument("--threshold", default=d.threshold,
                   help="the filters' rule: dB, 'auto' (one population or two per source, labelnoise.thresholds), "
                        "'otsu' or 'keep=F' (default auto)")
    p.add_argument("--trunc-by", choices=("absolute", "relative"), default=d.trunc_by,
                   help="how steps 1-3 rank entries for truncation (default relative)")
    p.add_argument("--configs", default=d.configs, help=f"stage configs (default {d.configs})")
    p.add_argument("--set", action="append", default=[], metavar="[SCOPE:]A.B=VALUE",
                   help="config override for every training stage, or a stage, part or arm (repeatable)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per process (default: the CPUs)")
    p.add_argument("--out", type=Path, default=Path(PRESET.runs), help=f"runs and report (default {PRESET.runs})")
    p.add_argument("--data", type=Path, default=Path(PRESET.pools),
                   help=f"the synthetic sets and the filtered pools (default {PRESET.pools})")
    p.add_argument("--no-report", action="store_true", help="run the stages only")
    args = p.parse_args(argv)
    if args.tracks < 2 or args.test_tracks < 1 or args.seconds <= 0 or args.epochs_scale <= 0:
        p.error("need --tracks >= 2, --test-tracks >= 1, --seconds > 0 and --epochs-scale > 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    settings = Settings(tracks=args.tracks, seconds=args.seconds, test_tracks=args.test_tracks,
                        noise_rate=args.noise_rate, seed=args.seed, render=args.render,
                        epochs_scale=args.epochs_scale,
                        quick=args.quick, threshold=args.threshold, trunc_by=args.trunc_by,
                        configs=args.configs, overrides=tuple(args.set))
    started = time.monotonic()
    try:
        run(settings, args.out, args.data, device=args.device, report=not args.no_report, threads=args.threads)
    except pipeline.PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: the same command continues where this run stopped", file=sys.stderr)
        return 130
    print(f"demo: {runner.clock_text(time.monotonic() - started)} in all", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
