"""The installed package: a non-editable wheel in a fresh venv gives every console script, and no top-level `model`."""
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


def run(*cmd, cwd):
    return subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_every_cli_has_a_console_script():
    shims = sorted(p.stem for p in REPO.glob("*.py"))
    # The pipeline's command line has no top-level script: users type python -m labelnoise.pipeline.
    assert shims == sorted(p.stem for p in (REPO / "labelnoise" / "cli").glob("*.py")
                           if p.stem not in ("__init__", "pipeline"))
    for name in shims:
        assert SCRIPTS[f"labelnoise-{name.replace('_', '-')}"] == f"labelnoise.cli.{name}:main"
    for module in ("pipeline", "report", "demo", "export"):
        assert SCRIPTS[f"labelnoise-{module}"] == f"labelnoise.{module}:main"


def test_import_model_from_the_root_is_labelnoise_model():
    # One module object per file whichever name imported it.
    code = ("import model, labelnoise.model as lm; from model.htdemucs import HTDemucs; "
            "from labelnoise.checkpoint import architectures; "
            "assert model is lm and architectures()['htdemucs'] is HTDemucs, (model, lm)")
    result = run(sys.executable, "-c", code, cwd=REPO)
    assert result.returncode == 0, result.stderr


def test_wheel_in_a_fresh_venv(tmp_path):
    # Build from a copy: a build writes build/ and *.egg-info beside the sources.
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".git", ".venv", "runs", "data", "metadata",
                                                             "build", "*.egg-info", "__pycache__"))
    wheels = tmp_path / "wheels"
    built = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                "-w", wheels, src, cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    fresh = tmp_path / "fresh"
    venv.create(fresh, with_pip=False)
    python = fresh / "bin" / "python"
    installed = run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
                    *wheels.glob("*.whl"), cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                    cwd=tmp_path).stdout.strip())
    assert (site / "labelnoise" / "model" / "htdemucs.py").is_file()
    assert not (site / "model").exists()
    # The dependencies (torch, numpy...) from this environment, without its editable labelnoise.
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for script in ("labelnoise-separate", "labelnoise-evaluate", "labelnoise-export", "labelnoise-train"):
        result = run(fresh / "bin" / script, "--help", cwd=elsewhere)
        assert result.returncode == 0, result.stderr
        assert "usage:" in result.stdout
    where = run(python, "-c", "import labelnoise.model.htdemucs as h, sys; print(h.__file__); "
                "print('model' in sys.modules)", cwd=elsewhere)
    assert where.returncode == 0, where.stderr
    assert where.stdout.split() == [str(site / "labelnoise" / "model" / "htdemucs.py"), "False"]


def test_console_scripts_of_this_environment_answer_help(tmp_path):
    # What `make install` (an editable install) put beside this interpreter, run from another folder.
    bin_dir = Path(sys.executable).parent
    for name in SCRIPTS:
        result = run(bin_dir / name, "--help", cwd=tmp_path)
        assert result.returncode == 0, (name, result.stderr[-500:])
        assert "usage:" in result.stdout, name
