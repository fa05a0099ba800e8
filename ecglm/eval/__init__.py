"""Stage family 4, evaluation: zero-shot scoring, the baselines, and the result tables."""
