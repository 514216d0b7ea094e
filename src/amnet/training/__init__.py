"""Training and evaluation: data readers, feature cache, heads, priors, cross-validation."""
