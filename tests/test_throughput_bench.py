"""bench/throughput.py at its quick sizes: every part runs and lands in the report (no timing checks)."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_throughput_report(tmp_path):
    out = tmp_path / "throughput.md"
    done = subprocess.run([sys.executable, str(ROOT / "bench/throughput.py"), "--quick", "--cpu",
                           "--out", str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = out.read_text()
    assert "FAILED" not in report
    for title in ("model forward+backward, small", "data loader", "filter (stem-minutes per minute)",
                  "separation real-time factor"):
        assert f"## {title}" in report
    # Ours and the reference appear in each part's own output.
    assert "ratio ours/reference" in report and "FLOPs per step" in report
    assert "rubberband backend" in report or "original column skipped" in report
    assert "ours / demucs" in report
    assert "| ours |" in report
