"""Tensor math of the plastic network: forward/backward, rewiring, growth surgery, merges, optimizers, buffers."""
