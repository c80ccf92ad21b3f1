"""bench/gpu_check.py --dry-run: every check of the GPU run, on the CPU at tiny sizes (gloo).

The figures mean nothing here; what is tested is that each check runs to its
end through the same code as on a GPU, that the report holds every figure,
and that a check that fails (here: one out of time) is reported, makes the
exit status 1 and leaves the others running.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import gpu_check  # noqa: E402

# What each check must have reported (a row's measure contains the text).
EXPECTED = {
    "train-P1": ["P1, batch 1 x 0.25 s, fp32: items/s", "bf16: items/s", "bf16 + compile: items/s", "MFU %",
                 "peak GiB"],
    "train-P2": ["P2, batch 1 x 0.25 s, fp32: items/s", "P2, batch 1 x 0.25 s, bf16: items/s"],
    "torchrun": ["torchrun --nproc_per_node=1 train.py configs/tiny/step1.yaml, one epoch (gloo)"],
    "vocoder": ["+3 semitones", "-6..6 semitones"],
    "filter": ["filter bf16", "filter float32"],
    "separate": ["separation, 1 s, overlap 0.25, bf16: real-time factor"],
    "headroom": ["largest P2 batch in 0.5 GiB", "largest P2 batch in 1 GiB"],
}


def rows(report: str) -> dict[str, list[list[str]]]:
    """The figure table's cells, by check."""
    out: dict[str, list[list[str]]] = {}
    for line in report.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 6 and cells[0] in gpu_check.BUDGETS:
            out.setdefault(cells[0], []).append(cells)
    return out


def test_dry_run_runs_every_check_and_reports_it(tmp_path, capsys):
    out = tmp_path / "report" / "gpu_check.md"
    assert gpu_check.main(["--dry-run", "--out", str(out)]) == 0, capsys.readouterr().out
    report = out.read_text()
    assert report.startswith("# GPU check (dry run)") and "Targets" in report
    for name in gpu_check.BUDGETS:
        assert f"| {name} | ok |" in report, name
    table = rows(report)
    assert set(table) == set(gpu_check.BUDGETS)
    for name, measures in EXPECTED.items():
        for text in measures:
            assert any(text in cells[1] for cells in table[name]), (name, text)
    # Ours and the reference side by side where a reference exists: numbers in both cells.
    for name in ("train-P1", "vocoder", "filter", "separate"):
        two = [c for c in table[name] if c[4].endswith("x")]
        assert two, name
        assert all(float(c[2].replace(",", "")) > 0 and float(c[3].replace(",", "")) > 0 for c in two), name
    assert not list(out.parent.glob(".*.tmp.*"))  # written atomically


def test_a_failing_check_is_reported_and_the_others_still_run(tmp_path, capsys):
    out = tmp_path / "gpu_check.md"
    # The torchrun check generates data, then trains an epoch under torchrun, whose worker imports
    # torch before it starts: far more than one second on any machine, so it runs out of time and
    # emits no figure. (The vocoder check can finish within a second on a fast CPU.)
    code = gpu_check.main(["--dry-run", "--only", "torchrun", "headroom", "--budget", "torchrun=1", "--out", str(out)])
    assert code == 1
    report = out.read_text()
    assert "| torchrun | TIMED OUT after 1 s |" in report
    assert "## torchrun: TIMED OUT after 1 s" in report
    assert "| headroom | ok |" in report
    assert set(rows(report)) == {"headroom"}


def test_bad_budget_is_refused():
    with pytest.raises(SystemExit, match="expected CHECK=SECONDS"):
        gpu_check.main(["--dry-run", "--budget", "nothing=3"])
