"""Anime Vector Service: the Litestar façade, its encoders and its store."""

__version__ = "0.1.0"
