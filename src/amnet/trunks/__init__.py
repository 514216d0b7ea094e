"""Frozen ImageNet trunks: the registry (specs, weights, preprocessing) and the networks."""
