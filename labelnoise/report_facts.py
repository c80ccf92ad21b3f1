"""What a run folder holds, read for the report: the runner's manifest, each stage's scores,
metrics and config, the selections and their margins (labelnoise.report writes the document).
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from .files import CONFIG_FILE, MARGINS_CSV, METRICS_FILE, SELECTION_FILE
from .final_bag import HELDOUT_FILE
from .pipeline import ARMS, BAG_STAGE, FILTERS, PART2_MODELS
from .runner import MANIFEST
from .synth import LABELS_FILE, PARAMS_FILE
from .yamlio import read_mapping


class ReportError(RuntimeError):
    """A run folder the report cannot be made from; the message names the file."""


@dataclass
class Facts:
    out: Path
    manifest: dict
    scores: dict[str, dict] = field(default_factory=dict)      # stage -> evaluation report
    metrics: dict[str, list] = field(default_factory=dict)     # train stage -> metrics.jsonl records
    configs: dict[str, dict] = field(default_factory=dict)     # train stage -> its resolved config
    selections: dict[str, dict] = field(default_factory=dict)  # select stage -> selection.json
    margins: dict[str, list] = field(default_factory=dict)     # select stage -> margins.csv rows

    @property
    def stages(self) -> list[dict]:
        return self.manifest["stages"]

    def names(self, **match) -> list[str]:
        return [s["name"] for s in self.stages if all(s.get(k) == v for k, v in match.items())]

    def part1(self) -> list[str]:
        return self.names(part="part1", kind="train")

    def part2_train(self) -> list[str]:
        return self.names(part="part2", kind="train")

    def arm_stages(self) -> dict[str, list[str]]:
        """Each arm's stages, in the order they ran."""
        out: dict[str, list[str]] = {}
        for s in self.stages:
            if s["group"] != "method":
                out.setdefault(s["group"], []).append(s["name"])
        return out

    def arm_finals(self) -> dict[str, str]:
        """Each arm's last model (the one it is compared by)."""
        return {arm: names[-1] for arm, names in self.arm_stages().items()}

    def arm_what(self, arm: str) -> str:
        return ARMS[arm].what if arm in ARMS else arm

    def filters(self) -> dict[str, str]:
        """The select stages present, with their titles."""
        return {f"select_{name}": f"filter {k}" for k, (name, _, _) in enumerate(FILTERS, 1)
                if f"select_{name}" in self.names()}

    def model_stages(self) -> list[dict]:
        return [s for s in self.stages if s["name"] in self.scores]

    def bag_scores(self) -> dict | None:
        return self.scores.get(BAG_STAGE)

    def test_folder(self) -> Path | None:
        test = self.manifest.get("data", {}).get("test")
        return None if test is None else Path(test)

    def train_params(self) -> dict | None:
        """The generator's settings when the training data is a synthetic set."""
        path = Path(self.manifest["data"]["train"]) / PARAMS_FILE
        return read_json(path) if path.is_file() else None

    def heldout(self) -> dict[str, dict[str, float]]:
        """Each bag candidate's held-out SDR per source (labelnoise.final_bag), where scored."""
        out = {}
        for name in PART2_MODELS:
            stage = next((s for s in self.stages if s["name"] == name), None)
            path = None if stage is None else Path(stage["done"]).parent / HELDOUT_FILE
            if path is not None and path.is_file():
                out[name] = {s: v["mean"] for s, v in read_json(path).get("references", {}).items()}
        return out

    def has_labels(self) -> bool:
        return (Path(self.manifest["data"]["train"]) / LABELS_FILE).is_file()


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: not valid JSON ({exc})") from None


def gather(out: str | Path) -> Facts:
    """Everything the report shows, read from ``out``; stages not run yet are simply absent."""
    out = Path(out)
    path = out / MANIFEST
    if not path.is_file():
        raise ReportError(f"{path}: not found; this folder was not made by python -m labelnoise.pipeline run "
                          "(or python -m labelnoise.demo)")
    facts = Facts(out, read_json(path))
    for stage in facts.stages:
        name = stage["name"]
        if stage["eval"] and Path(stage["eval"]).is_file():
            facts.scores[name] = read_json(Path(stage["eval"]))
        if stage["kind"] == "train":
            run = Path(stage["done"]).parent
            if (run / METRICS_FILE).is_file():
                facts.metrics[name] = [json.loads(line) for line in (run / METRICS_FILE).read_text().splitlines()
                                       if line.strip()]
            if (run / CONFIG_FILE).is_file():
                facts.configs[name] = read_mapping(run / CONFIG_FILE, ReportError)
        if stage["kind"] == "select" and stage["selection"]:
            dest = Path(stage["selection"])
            if (dest / SELECTION_FILE).is_file():
                facts.selections[name] = read_json(dest / SELECTION_FILE)
            if (dest / MARGINS_CSV).is_file():
                with open(dest / MARGINS_CSV, newline="") as f:
                    facts.margins[name] = list(csv.DictReader(f))
    return facts
