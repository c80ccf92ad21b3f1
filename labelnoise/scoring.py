"""A test set's scores of each model the runner makes, cached next to the model.

The cache (``RUN/test_sdr.json``; ``RUNS/final_test_sdr.json`` for the bag)
records which test set it was made on and the size and mtime of every file
the model was read from; a cached score whose test set or model changed is
made again.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from .atomic import write_json
from .yamlio import read_mapping

EVAL_FILE = "test_sdr.json"
BAG_EVAL_FILE = "final_test_sdr.json"
SEPARATED_DIR = "final_separated"   # the bag's estimates, kept for the report's spectrogram


def _stamp(paths: list[Path]) -> list[list]:
    return [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in paths]


def model_files(model: Path) -> list[Path]:
    """The files a model or bag is read from (a cached score is stale when one of them changed)."""
    if model.suffix in (".yaml", ".yml"):
        return [model] + [(model.parent / m).resolve() for m in read_mapping(model).get("models", [])]
    return [model]


def identity(folder: Path) -> dict:
    """What a test set is: its folder, its tracks, and a digest of its files' names, sizes and mtimes."""
    from .evaluation import list_tracks

    tracks = list_tracks(folder)
    digest = hashlib.sha1()
    for track in tracks:
        for wav in sorted(track.glob("*.wav")):
            st = wav.stat()
            digest.update(f"{track.name}/{wav.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return {"folder": str(folder.resolve()), "tracks": len(tracks), "digest": digest.hexdigest()[:16]}


class TestSet:
    """The test tracks, read once; each model's scores cached next to it."""

    def __init__(self, folder: str | Path, device: str = "cpu"):
        self.folder, self.device = Path(folder), device
        self._tracks = None
        self.identity = identity(self.folder)

    def tracks(self):
        if self._tracks is None:
            from .evaluation import load_tracks
            self._tracks = load_tracks(self.folder)
        return self._tracks

    def cached(self, model: str | Path, cache: str | Path) -> dict | None:
        path = Path(cache)
        if not path.is_file():
            return None
        try:
            report = json.loads(path.read_text())
        except json.JSONDecodeError:
            return None
        fresh = (report.get("test_set") == self.identity
                 and report.get("stamp") == _stamp(model_files(Path(model))))
        return report if fresh else None

    def evaluate(self, model: str | Path, cache: str | Path, keep_estimates: bool = False) -> dict:
        """The model's (or bag's) scores: cached, or separated and scored now (and cached)."""
        report = self.cached(model, cache)
        if report is not None:
            return report
        from .bag import load_model_or_bag
        from .evaluation import evaluate_model

        model_path = Path(model)
        start = time.monotonic()
        out_dir = Path(cache).parent / SEPARATED_DIR if keep_estimates else None
        report = evaluate_model(load_model_or_bag(model_path), self.tracks(), device=self.device, out_dir=out_dir)
        report.update(model=str(model_path), test_set=self.identity, stamp=_stamp(model_files(model_path)),
                      seconds=time.monotonic() - start, separated=None if out_dir is None else str(out_dir))
        write_json(cache, report)
        return report
