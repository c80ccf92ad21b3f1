"""Every CUDA path of the project run once on one GPU, with figures against the reference: one command.

    python bench/gpu_check.py --out runs/gpu_check/gpu_check.md     # one H100/H200: under 8 minutes
    python bench/gpu_check.py --dry-run --out /tmp/gpu_check.md     # the same plumbing on a CPU: tiny, gloo
    python bench/gpu_check.py --only vocoder filter --out /tmp/some.md
    bash bench/gpu_check.sh --out "$OUT/gpu_check.md"               # a bare GPU machine (see the script)

Checks, ours against the reference (demucs 4.1.0, Rubber Band) where one exists
(bench/gpu_measures.py holds them):

- ``train-P1``, ``train-P2``: forward+backward items/s of the network (the
  recipe's per-GPU batch, 11 s items) in fp32 (TF32 matmuls), bf16 autocast
  and bf16 + ``compile_network()`` (what ``train.compile`` does; demucs' model
  compiled whole); MFU against the GPU's dense peak; peak memory;
- ``torchrun``: ``torchrun --nproc_per_node=1 train.py configs/step1.yaml``
  for one short epoch: the process group must be NCCL (gloo on a CPU);
- ``vocoder``: ms per 11 s stereo stem of the phase vocoder on the GPU, against
  Rubber Band R2 on one CPU thread;
- ``filter``: stem-minutes per minute of ``labelnoise.filtering`` in bf16 (and
  float32) against the original's method (the Rubber Band CLI when installed,
  else its library through pedalboard, then ``apply_model`` in float32);
- ``separate``: real-time factor of ``labelnoise.inference`` in bf16 against
  ``apply_model`` under the same autocast;
- ``headroom``: the largest P2 batch (bf16, Adam) in 40 GB and 80 GB,
  extrapolated from the peak memory at two batch sizes, then checked under
  ``torch.cuda.set_per_process_memory_fraction``.

Each check runs in its own process with its own time budget (the budgets add
up to 7 minutes and a half; what a check leaves goes to the next): a crash, an
out-of-memory or a hang in one is reported and the others still run. The report (``--out``, markdown, written
atomically) holds one table of figures, the state of every check, the issue's
targets and the log of every failure. Exit status 1 when a check failed or
ran out of its budget, 0 otherwise. ``--dry-run`` runs the same checks on
the CPU with tiny sizes (gloo, Inductor replaced by aot_eager): its figures
say only that the plumbing works.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from labelnoise.atomic import write_text  # noqa: E402

ROW = "@gpu_check "  # prefix of a child's figure lines on its stdout
# Seconds each check may take: (on one GPU, in a dry run), in the order they run. The GPU budgets
# add up to 450 s; what a check leaves of its budget goes to the next, so the training checks,
# whose Inductor builds take longest to guess, come last. A dry run's are bounds for a hang on a
# loaded CPU, where each takes 5 to 30 s.
BUDGETS = {"torchrun": (45, 120), "vocoder": (20, 120), "filter": (50, 120), "separate": (35, 120),
           "headroom": (50, 120), "train-P1": (130, 120), "train-P2": (120, 120)}
# The targets of issue 19: (text, key of ours, what it is divided by: the key of another of ours,
# "reference" (the row's own) or None (the value itself), threshold: at least, or below its negative).
TARGETS = [
    ("P1 bf16 + compile >= 3x fp32 items/s", "train/P1/bf16 + compile/items_s", "train/P1/fp32/items_s", 3.0),
    ("P2 bf16 + compile >= 3x fp32 items/s", "train/P2/bf16 + compile/items_s", "train/P2/fp32/items_s", 3.0),
    ("P1 MFU >= 35 % (bf16 + compile)", "train/P1/bf16 + compile/mfu", None, 35.0),
    ("P2 MFU >= 35 % (bf16 + compile)", "train/P2/bf16 + compile/mfu", None, 35.0),
    ("vocoder < 5 ms per stem", "vocoder/fixed", None, -5.0),  # negative: below
    ("filter >= 3x the original's method", "filter/bf16", "reference", 3.0),
]


# ---------------------------------------------------------------- the child: one check

def child(name: str, dry_run: bool, budget: float) -> int:
    import torch

    import gpu_measures

    deadline = time.monotonic() + budget
    device = torch.device("cpu" if dry_run else "cuda")
    if dry_run:
        torch.set_num_threads(1)  # tiny tensors: threads only contend on a small, shared CPU

    def emit(key, measure, ours, reference, better, note):
        print(ROW + json.dumps({"key": key, "measure": measure, "ours": ours, "reference": reference,
                                "better": better, "note": note}), flush=True)

    sizes = gpu_measures.SIZES["dry" if dry_run else "gpu"]
    gpu_measures.CHECKS[name](sizes, device, emit, lambda: deadline - time.monotonic())
    return 0


# ---------------------------------------------------------------- the parent: every check

def run_check(name: str, budget: float, dry_run: bool) -> dict:
    """Run one check in a fresh process; its rows, status, seconds and log."""
    cmd = [sys.executable, __file__, "--child", name, "--budget", f"{name}={budget}", *(["--dry-run"] * dry_run)]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        out, err = proc.communicate(timeout=budget)
        status = "ok" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the check and what it started (torchrun's worker)
        out, err = proc.communicate()
        status = f"TIMED OUT after {budget:.0f} s"
    rows = [json.loads(line[len(ROW):]) for line in out.splitlines() if line.startswith(ROW)]
    log = "\n".join([line for line in out.splitlines() if not line.startswith(ROW)] + err.splitlines())
    return {"name": name, "status": status, "seconds": time.monotonic() - start, "budget": budget,
            "rows": merge_rows(rows), "log": log}


def merge_rows(rows: list[dict]) -> list[dict]:
    """Rows with one key become one: a check emits ours and the reference as it gets each."""
    merged: dict[str, dict] = {}
    for row in rows:
        into = merged.setdefault(row["key"], dict(row, note=""))
        for field in ("measure", "ours", "reference", "better"):
            if row[field] is not None:
                into[field] = row[field]
        into["note"] = "; ".join(n for n in (into["note"], row["note"]) if n)
    return list(merged.values())


def fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def advantage(row: dict) -> str:
    """How many times better ours is (> 1: ours is better), for rows with two numbers."""
    ours, ref = row["ours"], row["reference"]
    if not all(isinstance(v, (int, float)) and v > 0 for v in (ours, ref)) or row["better"] is None:
        return ""
    return f"{ours / ref if row['better'] == 'higher' else ref / ours:.2f}x"


def target_lines(results: list[dict]) -> list[str]:
    rows = {row["key"]: row for result in results for row in result["rows"]}
    lines = []
    for text, key, base, threshold in TARGETS:
        row = rows.get(key)
        value = row and row["ours"]
        if base == "reference":
            base_value = row and row["reference"]
        else:
            base_value = rows[base]["ours"] if base in rows else 1.0 if base is None else None
        if not all(isinstance(v, (int, float)) for v in (value, base_value)):
            lines.append(f"- {text}: not measured")
            continue
        got = value / base_value
        met = got < -threshold if threshold < 0 else got >= threshold
        shown = f"{got:.2f}x" if base else f"{got:.3g}"
        lines.append(f"- {text}: {shown} — {'met' if met else 'NOT met'}")
    return lines


def machine(dry_run: bool) -> str:
    import torch

    if not dry_run and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        where = f"{props.name} ({props.total_memory / 2**30:.1f} GiB), CUDA {torch.version.cuda}"
    else:
        where = f"CPU ({platform.machine()}, {os.cpu_count()} cores)"
    return f"{where}, torch {torch.__version__}, Python {platform.python_version()}"


def report(results: list[dict], dry_run: bool, command: str) -> str:
    lines = [f"# GPU check{' (dry run)' if dry_run else ''}", "",
             f"{datetime.date.today().isoformat()}, {machine(dry_run)}.", f"Command: `{command}`", ""]
    if dry_run:
        lines += ["Dry run: the CPU, tiny sizes, gloo, aot_eager: the figures say nothing about speed.", ""]
    lines += ["| check | measure | ours | reference | ours vs reference | note |", "|---|---|---:|---:|---:|---|"]
    for result in results:
        for row in result["rows"]:
            cells = [result["name"], row["measure"], fmt(row["ours"]), fmt(row["reference"]), advantage(row),
                     row["note"]]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines += ["", "| check | status | seconds | budget (s) |", "|---|---|---:|---:|"]
    lines += [f"| {r['name']} | {r['status']} | {r['seconds']:.0f} | {r['budget']:.0f} |" for r in results]
    lines += ["", "Targets (benchmarks, not tests):"]
    lines += ["- not evaluated in a dry run"] if dry_run else target_lines(results)
    for result in results:
        if result["status"] != "ok":
            tail = "\n".join(result["log"].splitlines()[-40:])
            lines += ["", f"## {result['name']}: {result['status']}", "", "```", tail, "```"]
    return "\n".join(lines) + "\n"


def parse_budgets(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        name, _, seconds = item.partition("=")
        if name not in BUDGETS or not seconds:
            raise SystemExit(f"--budget {item!r}: expected CHECK=SECONDS with CHECK one of {', '.join(BUDGETS)}")
        out[name] = float(seconds)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Exit status: 0 every check ran, 1 a check failed or timed out.")
    parser.add_argument("--out", type=Path, default=ROOT / "runs/gpu_check/gpu_check.md", help="markdown report")
    parser.add_argument("--dry-run", action="store_true", help="the CPU, tiny sizes, gloo (what the tests run)")
    parser.add_argument("--only", nargs="+", choices=list(BUDGETS), help="these checks only")
    parser.add_argument("--budget", nargs="+", default=[], metavar="CHECK=SECONDS", help="change a check's budget")
    parser.add_argument("--child", choices=list(BUDGETS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    budgets = {name: pair[1 if args.dry_run else 0] for name, pair in BUDGETS.items()}
    budgets.update(parse_budgets(args.budget))
    if args.child:
        try:
            return child(args.child, args.dry_run, budgets[args.child])
        except Exception:
            traceback.print_exc()
            return 1
    if not args.dry_run:
        import torch
        if not torch.cuda.is_available():
            parser.error("no CUDA device: run with --dry-run on a CPU")
    command = " ".join(["python bench/gpu_check.py", *(argv if argv is not None else sys.argv[1:])])
    results, granted, start = [], 0.0, time.monotonic()
    for name in [n for n in BUDGETS if n in (args.only or BUDGETS)]:
        granted += budgets[name]
        budget = max(1.0, granted - (time.monotonic() - start))  # its own and what earlier ones left
        print(f"{name}: running (budget {budget:.0f} s)", flush=True)
        result = run_check(name, budget, args.dry_run)
        results.append(result)
        print(f"{name}: {result['status']} in {result['seconds']:.0f} s", flush=True)
        for row in result["rows"]:
            print(f"  {row['measure']}: ours {fmt(row['ours'])}, reference {fmt(row['reference'])} {advantage(row)}")
    text = report(results, args.dry_run, command)
    write_text(args.out, text)
    print(text)
    print(f"report: {args.out}")
    return 0 if all(r["status"] == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
