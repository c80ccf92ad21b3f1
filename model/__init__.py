"""Networks of mdx-labelnoise, imported as ``labelnoise.model``; they import nothing else from ``labelnoise``.

``import model`` from a checkout's root gives the same package: this file then
stands for ``labelnoise.model`` and each of its modules, so a file is loaded
once (one ``HTDemucs`` class) whichever of the two names asked for it.
"""
if __name__ == "model":
    import importlib
    import pkgutil
    import sys

    _package = importlib.import_module("labelnoise.model")
    for _module in pkgutil.iter_modules(_package.__path__):
        sys.modules[f"model.{_module.name}"] = importlib.import_module(f"labelnoise.model.{_module.name}")
    sys.modules["model"] = _package
else:
    from .htdemucs import HTDemucs
    from .masknet import MaskNet

    __all__ = ["HTDemucs", "MaskNet"]
