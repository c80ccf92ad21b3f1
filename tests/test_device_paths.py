"""Code that must run on a GPU, checked on a CPU: tensors follow the batch's device, and
no CUDA call sits outside a branch taken only on a CUDA device.

Placement: the batch lives on the CPU while torch's default device is
``meta``. A tensor made without naming a device (one that would stay on the
CPU while a CUDA batch moved on) lands on ``meta`` and breaks the step; the
outputs must equal a plain run's and stay on the batch's device.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from labelnoise.config import build_model, load_config
from labelnoise.losses import ReconstructionLoss
from labelnoise.trainer import build_augment

ROOT = Path(__file__).resolve().parents[1]
STEP1 = ROOT / "configs" / "tiny" / "step1.yaml"
# Every batch augmentation on, the phase vocoder among them (the repitch backend that runs on the device).
ALL_AUGMENTS = ("augment.repitch.backend=vocoder", "augment.repitch.proba=1", "augment.repitch.same_for_all=false",
                "augment.scale.proba=1", "augment.remix.proba=1")


def batch() -> torch.Tensor:
    return torch.randn(4, 4, 2, 16000, generator=torch.Generator().manual_seed(1))


def augments(cfg: dict):
    _, modules = build_augment(cfg, torch.Generator().manual_seed(0))
    return modules


@pytest.fixture(scope="module")
def cfg() -> dict:
    return load_config(STEP1, list(ALL_AUGMENTS))


def test_augmentations_and_the_vocoder_take_the_batch_device(cfg):
    names = [type(m).__name__ for m in augments(cfg)]
    assert names == ["VocoderRepitch", "Shift", "FlipChannels", "FlipSign", "Scale", "Remix"]
    for index, name in enumerate(names):
        x = batch()
        plain = augments(cfg)[index](x)
        with torch.device("meta"):
            moved = augments(cfg)[index](x)
        assert moved.device == x.device, name
        assert torch.equal(moved, plain), name


def test_a_train_computation_makes_nothing_on_the_default_device(cfg):
    def step(default_device: str):
        torch.manual_seed(0)
        network, modules, sources = build_model(cfg).train(), augments(cfg), batch()
        with torch.device(default_device):  # built first: only the step runs under it
            for module in modules:
                sources = module(sources)
            estimate = network(sources.sum(dim=1))
            out = ReconstructionLoss("l1_trunc")(estimate, sources)
            out.loss.backward()
        return estimate, out.loss, [p.grad for p in network.parameters()]

    estimate, loss, grads = step("cpu")
    estimate_m, loss_m, grads_m = step("meta")
    assert estimate_m.device.type == loss_m.device.type == "cpu"
    assert all(g.device.type == "cpu" for g in grads_m)
    torch.testing.assert_close(estimate_m, estimate, rtol=0, atol=0)
    torch.testing.assert_close(loss_m, loss, rtol=0, atol=0)
    for got, want in zip(grads_m, grads):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


# ---------------------------------------------------------------- CUDA calls

SOURCES = [*sorted((ROOT / "labelnoise").glob("*.py")), *sorted((ROOT / "model").glob("*.py")),
           *sorted(ROOT.glob("*.py"))]
# Asking is allowed anywhere: it is what a device choice starts from.
QUERIES = {"is_available"}


def _cuda_calls(tree: ast.AST):
    """(call node, its ancestors) of every ``torch.cuda.<name>(...)`` call."""
    stack = [(tree, ())]
    while stack:
        node, parents = stack.pop()
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and ast.unparse(node.func.value) == "torch.cuda" and node.func.attr not in QUERIES):
            yield node, parents
        stack.extend((child, parents + (node,)) for child in ast.iter_child_nodes(node))


def _device_guarded(node: ast.AST, parents: tuple) -> bool:
    """Inside the body of an ``if``/conditional expression whose test names a CUDA device."""
    chain = parents + (node,)
    for parent, child in zip(chain, chain[1:]):
        if isinstance(parent, (ast.If, ast.IfExp)) and child is not parent.test:
            test = ast.unparse(parent.test)
            if "cuda" in test and "is_available" not in test:
                return True
    return False


def test_no_cuda_call_outside_a_cuda_device_branch():
    seen, unguarded = 0, []
    for path in SOURCES:
        for node, parents in _cuda_calls(ast.parse(path.read_text(), str(path))):
            seen += 1
            if not _device_guarded(node, parents):
                unguarded.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert seen >= 4  # set_device, the RNG state (2), the memory peak: the scan finds them
    assert not unguarded, "CUDA calls a CPU run could reach:\n" + "\n".join(unguarded)


def test_the_guard_check_catches_an_availability_only_branch():
    # What trainer._rng_state did before: CUDA touched on a CPU run of a GPU machine.
    code = ast.parse("state = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []\n"
                     "if device.type == 'cuda':\n    torch.cuda.synchronize(device)\n")
    verdicts = [_device_guarded(node, parents) for node, parents in _cuda_calls(code)]
    assert sorted(verdicts) == [False, True]
