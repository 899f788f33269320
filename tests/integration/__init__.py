"""Interop tests: our daemon against real FRR bfdd and BIRD 2 in network namespaces."""
