"""Benchmarks: `sermo bench extract` (and, with serving, `sermo bench predict`)."""
