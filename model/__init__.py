"""Networks of mdx-labelnoise. Imports nothing from ``labelnoise``."""
