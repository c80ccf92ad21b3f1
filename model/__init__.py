"""Networks of mdx-labelnoise. Imports nothing from ``labelnoise``."""
from .htdemucs import HTDemucs

__all__ = ["HTDemucs"]
