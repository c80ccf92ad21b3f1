"""The house rules that a reader meets first: small modules, a training loop that fits on a few screens."""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAX_MODULE_LINES = 450
MAX_TRAINER_LINES = 250


def _modules():
    return [*REPO.glob("*.py"), *(REPO / "labelnoise").rglob("*.py"), *(REPO / "model").glob("*.py"),
            *(REPO / "slurm").glob("*.py")]


def test_no_module_over_the_limit():
    long = {str(p.relative_to(REPO)): n for p in _modules()
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by job): {long}"


def test_the_class_that_holds_the_loop_is_short():
    tree = ast.parse((REPO / "labelnoise" / "trainer.py").read_text())
    trainer = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "Trainer")
    lines = trainer.end_lineno - trainer.lineno + 1
    assert lines <= MAX_TRAINER_LINES, f"Trainer is {lines} lines"
