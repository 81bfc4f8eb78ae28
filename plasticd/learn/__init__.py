"""The learning core: the Engine (predict, then learn), its saved state, growth policy, consolidation and metrics.

Imports only ``plasticd.model`` (tensor math), ``config`` and ``errors``: never the service or the benchmarks.
"""
