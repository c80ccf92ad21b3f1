"""Shared code of mdx-labelnoise: data, augmentation, losses, inference, metrics."""

# Stem order everywhere in training and inference (the demucs order).
SOURCES = ("drums", "bass", "other", "vocals")
