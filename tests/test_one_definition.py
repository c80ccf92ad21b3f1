"""Stage order, stage names and default settings each exist in one place; everything else reads them.

The pipeline (labelnoise/pipeline.py) defines the stages, their order, names and default paths;
slurm/defaults.env the SLURM settings' defaults. These tests fail when a second list appears.
"""
import ast
import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from labelnoise import pipeline

REPO = Path(__file__).resolve().parents[1]
LAYOUT = replace(pipeline.PRESETS["tiny"], arms=tuple(pipeline.ARMS), clean="data/tiny_clean")
CHAIN_ARGS = ["--preset", "tiny", "--arms", ",".join(pipeline.ARMS), "--clean", "data/tiny_clean"]


def _submit():
    spec = importlib.util.spec_from_file_location("slurm_submit_defs", REPO / "slurm" / "submit.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _bash(script: str, env: dict) -> str:
    out = subprocess.run(["bash", "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _clean_env() -> dict:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    return {**keep, "PYTHON": sys.executable, "ENV_SETUP": ""}


def test_common_sh_chains_the_pipelines_stages():
    script = ("set -euo pipefail; source slurm/common.sh; read_chain all " + " ".join(CHAIN_ARGS) + "; "
              'for i in "${!stage_name[@]}"; do printf "%s\\t%s\\t%s\\t%s\\n" "${stage_name[$i]}" '
              '"${stage_after[$i]}" "${stage_done[$i]}" "${stage_argv[$i]}"; done')
    rows = [line.split("\t") for line in _bash(script, _clean_env()).strip().splitlines()]
    chain = pipeline.stages("all", LAYOUT)
    assert [r[0] for r in rows] == [s.name for s in chain]
    for (name, after, done, argv), stage in zip(rows, chain):
        assert (after, done) == (",".join(stage.after) or "-", stage.done)
        assert argv == __import__("shlex").join(stage.argv)


def test_submit_py_takes_the_pipelines_stages_and_options():
    submit = _submit()
    import argparse
    parser = argparse.ArgumentParser()
    pipeline.add_chain_arguments(parser)
    layout = pipeline.layout_from(parser.parse_args(CHAIN_ARGS))
    assert layout == LAYOUT
    assert submit.choose(["all"], layout, None) == pipeline.stages("all", LAYOUT)
    assert [s.name for s in submit.choose(["part1"], layout, "step2", "baseline_step1")] == \
        ["step2", "step3", "baseline_step1"]


def test_the_slurm_defaults_live_in_defaults_env_alone():
    submit = _submit()
    listed = submit.defaults()
    assert listed["GPUS"] == "8" and listed["CONSTRAINT"] == "a100" and listed["NODES"] == "1"
    names = " ".join(listed)
    script = f"source slurm/common.sh; for n in {names}; do printf '%s=%s\\n' \"$n\" \"${{!n}}\"; done"
    from_shell = dict(line.split("=", 1) for line in _bash(script, _clean_env()).strip().splitlines())
    assert from_shell == listed == {k: submit.settings({})[k] for k in listed}
    # Set variables win, in both, even when set to nothing.
    env = {**_clean_env(), "CONSTRAINT": "", "GPUS": "0", "NODES": "2"}
    from_shell = dict(line.split("=", 1) for line in _bash(script, env).strip().splitlines())
    assert {k: from_shell[k] for k in ("CONSTRAINT", "GPUS", "NODES")} == {"CONSTRAINT": "", "GPUS": "0", "NODES": "2"}
    assert {k: submit.settings(env)[k] for k in listed} == from_shell
    # No value of the list is written down a second time in the scripts.
    for script_path in (REPO / "slurm").glob("*.sh"):
        text = script_path.read_text()
        for name in listed:
            assert not re.search(rf"^\s*{name}=\$\{{{name}:?-[^}}]", text, re.M), f"{script_path}: {name} default"
    assert "DEFAULTS = {" not in (REPO / "slurm" / "submit.py").read_text()


def _code_strings(path: Path) -> list[tuple[int, str]]:
    """String literals of a Python file's code (docstrings left out)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_no_second_list_of_stage_names_in_the_code():
    chain = pipeline.stages("all", LAYOUT)
    # The names only the pipeline gives (a source's name, such as vocals, is also a stage's).
    names = {s.name for s in chain} - {"vocals", "bass", "drums", "other", "bag"}
    names |= {name for name, _, _ in pipeline.FILTERS}
    found = []
    files = [p for p in [*REPO.glob("*.py"), *(REPO / "labelnoise").glob("*.py"), *(REPO / "bench").glob("*.py"),
                         *(REPO / "slurm").glob("*.py")] if p != REPO / "labelnoise" / "pipeline.py"]
    for path in files:
        for line, text in _code_strings(path):
            # Help texts may mention a stage; a name on its own is a list's item or a lookup.
            if text in names:
                found.append(f"{path.relative_to(REPO)}:{line}: {text!r}")
    for path in [*(REPO / "slurm").glob("*.sh"), *(REPO / "slurm").glob("*.sbatch"), REPO / "Makefile"]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if set(re.findall(r"[a-z_0-9]+", code)) & names:
                found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not found, "stage names outside labelnoise/pipeline.py:\n" + "\n".join(found)
