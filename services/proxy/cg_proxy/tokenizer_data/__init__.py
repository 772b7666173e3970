"""Vendored tiktoken encoding files (data only; see README.md)."""
