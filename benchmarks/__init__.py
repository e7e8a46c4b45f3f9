"""Benchmarks (``make bench``): the provider's landing path against the usual alternatives."""
