"""Progress in a log file: whole lines at an interval, never carriage-return redraws."""
import io

from labelnoise import progress


def test_a_log_gets_one_line_per_interval_and_the_last_count(monkeypatch):
    monkeypatch.setenv(progress.INTERVAL_ENV, "0")
    out = io.StringIO()
    b = progress.bar(total=3, desc="epoch 1", unit="step", file=out)
    assert isinstance(b, progress.LineProgress)
    for _ in range(3):
        b.update(1)
        b.set_postfix(loss="0.1000")
    b.close()
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 3 and lines[-1].startswith("epoch 1: 3/3 step, ") and lines[-1].endswith("(loss=0.1000)")


def test_a_long_interval_writes_the_end_only(monkeypatch):
    monkeypatch.setenv(progress.INTERVAL_ENV, "3600")
    out = io.StringIO()
    assert list(progress.bar(range(5), desc="filter", unit="stem", file=out)) == [0, 1, 2, 3, 4]
    assert out.getvalue().count("\n") == 1 and out.getvalue().startswith("filter: 5/5 stem")
    quiet = io.StringIO()
    list(progress.bar(range(5), disable=True, file=quiet))
    assert quiet.getvalue() == ""


def test_a_terminal_gets_tqdm():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    assert not isinstance(progress.bar(total=1, file=Terminal()), progress.LineProgress)
