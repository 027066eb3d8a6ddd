"""autellix: a program-aware serving layer for LLM agents (after Autellix, arXiv 2502.13965)."""

__version__ = "0.1.0"
