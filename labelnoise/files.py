"""The name of every file and folder this project writes or reads, and where each one lies.

Each name is spelled here once; the modules that write or read a file import
its name from here (tests/test_one_definition.py fails on a second spelling).
Where the files live::

    runs/<stage>/                     a training run (labelnoise.trainer)
        config.yaml                   the resolved config
        checkpoint.th                 the latest full state (resume)
        model.th, model_ema.th        the final weights (and their EMA)
        best.th                       the weights that scored best on the validation set
        metrics.jsonl                 one JSON line per step and epoch
        done                          exists once the run has finished
        test_sdr.json                 the test set's scores (labelnoise.scoring)
        heldout_sdr.json              the held-out tracks' scores (labelnoise.final_bag)
    runs/
        pipeline.json                 the runner's manifest (labelnoise.runner)
        final.yaml                    the final bag (labelnoise.final_bag)
        final_test_sdr.json           the bag's test scores
        final.md                      the bag's model card (labelnoise.model_card)
        report.md, report.html        the method's report
        logs/<stage>.log              each stage's output (labelnoise.runner)
        final_separated/              the bag's estimates of the test set
    evaluator_outputs_{suffix}/       the filter's outputs (labelnoise.filtering)
        filter.json                   its settings
        volumes.jsonl                 one record per (track, stem); volumes.rank{r}.jsonl while it runs
        volumns_{suffix}.json         the volumes measured from the original code's WAVs (a cache)
    labelnoise_clean_dataset_predicted_by_{suffix}/   a stem pool (labelnoise.selection)
        train/<source>/<track>.wav    the kept stems: what training reads
        selection.json                what was chosen and how; "complete": false while it is written
        labelnoise_track_clean_predicted_by_{suffix}.json   {stem: [track, ...]}
        report.md, margins.png, margins.csv, sweep.png      the filter's report (labelnoise.filter_report)
    ROOT/<track>/                     a track folder (labelnoise.metadata, labelnoise.evaluation)
        <source>.wav, mixture.wav     the stems and their mix
    a synthetic set (labelnoise.synth), track folders and
        noise_labels.json             the truth of each stem
        synth.json                    what made the set (seed, kinds, tracks)
    a dataset's index (labelnoise.metadata)
        ROOT/metadata.json, else $LABELNOISE_METADATA_DIR (default metadata/)/<name>-<hash>.json

``suffix`` is ``{model}_key{key}_speed{speed}``, the original's name of one filter run.
"""
from __future__ import annotations

import os
from pathlib import Path

# ------------------------------------------------------------------ a training run's folder
CONFIG_FILE = "config.yaml"
CHECKPOINT_FILE = "checkpoint.th"
MODEL_FILE = "model.th"
EMA_MODEL_FILE = "model_ema.th"
BEST_MODEL_FILE = "best.th"       # the best on the validation set, when the config validates
METRICS_FILE = "metrics.jsonl"
DONE_FILE = "done"
TEST_SCORES_FILE = "test_sdr.json"
HELDOUT_SCORES_FILE = "heldout_sdr.json"

# ------------------------------------------------------------------ the runs folder
MANIFEST_FILE = "pipeline.json"
BAG_FILE = "final.yaml"
BAG_SCORES_FILE = "final_test_sdr.json"
MODEL_CARD_FILE = "final.md"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
LOGS_DIR = "logs"                      # one log per stage the runner ran
SEPARATED_DIR = "final_separated"      # the bag's estimates of the test set, kept for the report

# ------------------------------------------------------------------ the filter's outputs
SUFFIX = "{model}_key{key}_speed{speed}"
FILTER_OUTPUTS = "evaluator_outputs_{suffix}"
FILTER_SETTINGS_FILE = "filter.json"
VOLUMES_FILE = "volumes.jsonl"
RANK_VOLUMES = "volumes.rank{rank}.jsonl"
RANK_VOLUMES_GLOB = RANK_VOLUMES.format(rank="*")
VOLUME_CACHE = "volumns_{suffix}.json"   # the original's name and spelling

# ------------------------------------------------------------------ a stem pool
POOL = "labelnoise_clean_dataset_predicted_by_{suffix}"
SELECTION_FILE = "selection.json"
CLEAN_STEMS = "labelnoise_track_clean_predicted_by_{suffix}.json"
MARGINS_PNG = "margins.png"
MARGINS_CSV = "margins.csv"
SWEEP_PNG = "sweep.png"

# ------------------------------------------------------------------ a track folder (ROOT/<track>/)
DATA_ROOT = "data/labelnoise"       # the noisy track folders when none are given (configs/base.yaml's data.root)
MIXTURE_FILE = "mixture.wav"        # beside <source>.wav: the mix (read as given, or the sum of the stems)

# ------------------------------------------------------------------ a synthetic set
LABELS_FILE = "noise_labels.json"
SYNTH_FILE = "synth.json"

# ------------------------------------------------------------------ a dataset's index
METADATA_FILE = "metadata.json"
METADATA_DIR = "metadata"


def suffix(model: str, key: int, speed: int) -> str:
    """One filter run's name: ``pretrain3_key6_speed200``."""
    return SUFFIX.format(model=model, key=key, speed=speed)


def filter_outputs_dir(sfx: str) -> Path:
    """The filter's output folder of a suffix (relative: under the working directory or RUNS)."""
    return Path(FILTER_OUTPUTS.format(suffix=sfx))


def rank_volumes(out_dir: str | os.PathLike, rank: int) -> Path:
    """One rank's volumes while the filter runs; rank 0 merges them into ``VOLUMES_FILE``."""
    return Path(out_dir) / RANK_VOLUMES.format(rank=rank)


def volume_cache_name(sfx: str) -> str:
    return VOLUME_CACHE.format(suffix=sfx)


def pool_dir(data: str | os.PathLike, sfx: str) -> Path:
    """The pool next to its dataset: ``data/labelnoise`` -> ``data/labelnoise_clean_dataset_predicted_by_...``."""
    return Path(data).parent / POOL.format(suffix=sfx)


def clean_stems_name(sfx: str) -> str:
    return CLEAN_STEMS.format(suffix=sfx)

