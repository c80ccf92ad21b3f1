"""Stage order, stage names, default settings and on-disk names each exist in one place; everything else reads them.

The pipeline (labelnoise/pipeline.py) defines the stages, their order, names and default paths;
slurm/defaults.env the SLURM settings' defaults; labelnoise/files.py the name of every file and folder
the project writes or reads. These tests fail when a second list or a second spelling appears.
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
from labelnoise.cli.pipeline import add_chain_arguments, layout_from

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
    add_chain_arguments(parser)
    layout = layout_from(parser.parse_args(CHAIN_ARGS))
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


# The code the one-definition tests read: Python, and the shell code.
def _python_files() -> list[Path]:
    return [*REPO.glob("*.py"), *(REPO / "labelnoise").glob("*.py"), *(REPO / "labelnoise" / "cli").glob("*.py"),
            *(REPO / "bench").glob("*.py"), *(REPO / "slurm").glob("*.py")]


def _shell_files() -> list[Path]:
    return [*(REPO / "slurm").glob("*.sh"), *(REPO / "slurm").glob("*.sbatch"), REPO / "Makefile"]


def _docstrings(tree: ast.AST) -> set[int]:
    return {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
            and node.body and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)}


def _code_strings(path: Path) -> list[tuple[int, str]]:
    """String literals of a Python file's code (docstrings left out)."""
    tree = ast.parse(path.read_text())
    docstrings = _docstrings(tree)
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_no_second_list_of_stage_names_in_the_code():
    chain = pipeline.stages("all", LAYOUT)
    # The names only the pipeline gives (a source's name, such as vocals, is also a stage's).
    names = {s.name for s in chain} - {"vocals", "bass", "drums", "other", "bag"}
    names |= {name for name, _, _ in pipeline.FILTERS}
    found = []
    files = [p for p in _python_files() if p != REPO / "labelnoise" / "pipeline.py"]
    for path in files:
        for line, text in _code_strings(path):
            # Help texts may mention a stage; a name on its own is a list's item or a lookup.
            if text in names:
                found.append(f"{path.relative_to(REPO)}:{line}: {text!r}")
    for path in _shell_files():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if set(re.findall(r"[a-z_0-9]+", code)) & names:
                found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not found, "stage names outside labelnoise/pipeline.py:\n" + "\n".join(found)


# ---------------------------------------------------------------- on-disk names: labelnoise/files.py

# Files that still spell a name of labelnoise/files.py, each name listed with the reason. The test
# also fails when a listed name is gone from its file, so the list only shrinks.
NOT_YET_MOVED: dict[str, set[str]] = {}


def _on_disk_names() -> dict[str, str]:
    """Constant -> name: every name of labelnoise/files.py."""
    from labelnoise import files

    return {k: v for k, v in vars(files).items() if k.isupper() and isinstance(v, str)}


def _template(text: str) -> str:
    """A string with each ``{field}`` (or shell ``${var}``, ``$var``) as ``{}``, as f-strings render."""
    text = re.sub(r"\$\{[^}]*\}|\$[A-Za-z_]\w*", "{}", text)
    return re.sub(r"\{[^{}]*\}", "{}", text)


def _matcher(name: str, shell: bool = False):
    """Whether a code string spells ``name``: a word-like name (``done``) alone or as a path part (in
    shell code, after a ``/``: ``done`` alone ends a loop), any other as a piece of the string
    (``volumes.jsonl`` in ``{}/volumes.jsonl``; a template's fields match anything)."""
    if re.fullmatch(r"[a-z]+", name):
        if shell:
            return re.compile(rf"/{name}($|[/'\"`\s;)])").search
        return re.compile(rf"(^|[/'\"`]){name}($|[/'\"`])").search
    template = _template(name)
    before = r"(?<![\w.-])" if not template.startswith("{}") else ""
    after = r"(?![\w-])" if not template.endswith("{}") else ""
    return re.compile(before + re.escape(template) + after).search


def _python_templates(path: Path) -> list[tuple[int, str]]:
    """The code's strings as templates: f-strings whole (``f"{a}/x"`` -> ``{}/x``); no docstrings, dict keys
    or subscripts (``rec["done"]`` names a field, not a file)."""
    tree = ast.parse(path.read_text())
    skip = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            skip |= {id(v) for v in node.values}
        elif isinstance(node, ast.Dict):
            skip |= {id(k) for k in node.keys if k is not None}
        elif isinstance(node, ast.Subscript):
            skip.add(id(node.slice))
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            out.append((node.lineno, _template(node.value)))
        elif isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
            out.append((node.lineno, _template(text)))
    return out


def _shell_lines(path: Path) -> list[tuple[int, str]]:
    lines = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        code = re.sub(r"(^|\s)#.*", "", line)   # a comment; ${#array[@]} stays
        lines.append((number, _template(code)))
    return lines


def _spelled() -> dict[str, set[str]]:
    """File (relative) -> the constants of labelnoise/files.py whose name it spells."""
    names = _on_disk_names()
    home = REPO / "labelnoise" / "files.py"
    sources = [(p, _python_templates, False) for p in _python_files() if p != home]
    sources += [(p, _shell_lines, True) for p in _shell_files()]
    found: dict[str, set[str]] = {}
    for path, strings, shell in sources:
        matchers = {key: _matcher(name, shell) for key, name in names.items()}
        for _, text in strings(path):
            for key, match in matchers.items():
                if match(text):
                    found.setdefault(str(path.relative_to(REPO)), set()).add(key)
    return found


def test_every_on_disk_name_is_spelled_in_labelnoise_files_alone():
    found = _spelled()
    extra = {path: sorted(keys - NOT_YET_MOVED.get(path, set())) for path, keys in found.items()}
    extra = {path: keys for path, keys in extra.items() if keys}
    assert not extra, ("on-disk names spelled outside labelnoise/files.py (import them from there; the "
                       f"shell reads them with $PYTHON -c, as slurm/train.sbatch does): {extra}")
    gone = {path: sorted(keys - found.get(path, set())) for path, keys in NOT_YET_MOVED.items()}
    gone = {path: keys for path, keys in gone.items() if keys}
    assert not gone, f"names no longer spelled there: take them off NOT_YET_MOVED: {gone}"


def test_the_name_test_sees_each_way_a_name_is_spelled(tmp_path):
    # A name alone, in an f-string, in a path, in a help text; a field of a record is no file name.
    code = ('a = run / "model.th"\nb = f"{out}/volumes.jsonl"\nc = f"evaluator_outputs_{sfx}"\n'
            'd = path / "done"\ne = rec["done"]\nf = {"done": 1}\ng = "model.th is written"\n'
            'h = f"{m}_key{k}_speed{s}"\ni = "the run is done"\n')
    (tmp_path / "x.py").write_text(code)
    names = _on_disk_names()
    hits = {}
    for line, text in _python_templates(tmp_path / "x.py"):
        for key, name in names.items():
            if _matcher(name)(text):
                hits.setdefault(line, set()).add(key)
    assert hits == {1: {"MODEL_FILE"}, 2: {"VOLUMES_FILE"}, 3: {"FILTER_OUTPUTS"}, 4: {"DONE_FILE"},
                    7: {"MODEL_FILE"}, 8: {"SUFFIX"}}
    (tmp_path / "x.sh").write_text('run "$out/volumes.jsonl"  # volumes.jsonl\ndone <list\nls "$run/done"\n')
    lines = {n: {k for k, name in names.items() if _matcher(name, shell=True)(t)}
             for n, t in _shell_lines(tmp_path / "x.sh")}
    assert lines == {1: {"VOLUMES_FILE"}, 2: set(), 3: {"DONE_FILE"}}


def test_the_modules_not_yet_moved_agree_with_labelnoise_files():
    from labelnoise import files, report
    from labelnoise.selection import default_data

    assert pipeline.BAG_FILE == files.BAG_FILE
    assert (report.MD_FILE, report.HTML_FILE) == (files.REPORT_MD, files.REPORT_HTML)
    assert Path(pipeline.Layout().data) == default_data() == Path(files.DATA_ROOT)


# ---------------------------------------------------------------- one record of a (track, stem)

def _annotated_fields(cls: ast.ClassDef) -> set[str]:
    return {n.target.id for n in cls.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}


def test_one_record_type_for_a_track_and_stem():
    homes = []
    for path in sorted((REPO / "labelnoise").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and {"track", "stem"} <= _annotated_fields(node):
                homes.append(f"{path.relative_to(REPO)}:{node.name}")
    assert homes == ["labelnoise/stem_record.py:Stem"], homes
