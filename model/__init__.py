"""Networks of mdx-labelnoise. Imports nothing from ``labelnoise``."""
from .htdemucs import HTDemucs
from .masknet import MaskNet

__all__ = ["HTDemucs", "MaskNet"]
