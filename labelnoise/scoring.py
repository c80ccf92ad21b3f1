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
from .bag import member_path
from .files import BAG_SCORES_FILE, SEPARATED_DIR, TEST_SCORES_FILE
from .yamlio import read_mapping

EVAL_FILE = TEST_SCORES_FILE
BAG_EVAL_FILE = BAG_SCORES_FILE


def _stamp(paths: list[Path]) -> list[list]:
    return [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in paths]


def model_files(model: Path) -> list[Path]:
    """The files a model or bag is read from (a cached score is stale when one of them changed)."""
    if model.suffix in (".yaml", ".yml"):
        return [model] + [member_path(model, m) for m in read_mapping(model).get("models", [])]
    return [model]


def identity(folder: Path, tracks: list[str] | None = None, keep: dict | None = None) -> dict:
    """What a test set is: its folder, its tracks, a digest of their files' names, sizes and mtimes,
    and (a held-out set) which of their stems are references."""
    from .evaluation import list_tracks

    folders = [t for t in list_tracks(folder) if tracks is None or t.name in tracks]
    missing = sorted(set(tracks or ()) - {t.name for t in folders})
    if missing:
        raise FileNotFoundError(f"{folder / missing[0]}: no such track folder ({len(missing)} missing)")
    digest = hashlib.sha1()
    for track in folders:
        for wav in sorted(track.glob("*.wav")):
            st = wav.stat()
            digest.update(f"{track.name}/{wav.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    if keep is not None:
        digest.update(json.dumps(keep, sort_keys=True).encode())
    return {"folder": str(folder.resolve()), "tracks": len(folders), "digest": digest.hexdigest()[:16]}


def reference_scores(report: dict, keep: dict | None) -> dict[str, dict[str, float]]:
    """Per source, per track: SDR on the tracks whose stem is a reference (all of them without ``keep``)."""
    return {source: {track: scores[source] for track, scores in report["scores"].items()
                     if keep is None or source in keep.get(track, ())}
            for source in report["sources"]}


def reference_means(report: dict, keep: dict | None) -> dict:
    """Per source: mean SDR over the tracks whose stem is a reference (all of them without ``keep``)."""
    out = {}
    for source, per_track in reference_scores(report, keep).items():
        values = list(per_track.values())
        out[source] = {"mean": sum(values) / len(values) if values else None, "tracks": len(values)}
    return out


class TestSet:
    """The test tracks, read once; each model's scores cached next to it.

    ``tracks``: only these track folders; ``keep``: per track, the stems that are references (the others
    are not scored: a held-out track's stems the filter found noisy).
    """

    def __init__(self, folder: str | Path, device: str = "cpu", tracks: list[str] | None = None,
                 keep: dict[str, list[str]] | None = None):
        self.folder, self.device = Path(folder), device
        self.names, self.keep = tracks, keep
        self._tracks = None
        self.identity = identity(self.folder, tracks, keep)

    def tracks(self):
        if self._tracks is None:
            from .evaluation import list_tracks, load_track
            self._tracks = [load_track(t) for t in list_tracks(self.folder)
                            if self.names is None or t.name in self.names]
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
                      seconds=time.monotonic() - start, separated=None if out_dir is None else str(out_dir),
                      references=reference_means(report, self.keep))
        write_json(cache, report)
        return report
