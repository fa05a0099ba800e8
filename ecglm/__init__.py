"""ECG-LM: an ECG language model pipeline (Yang et al., Health Data Science 2025)."""

__version__ = "0.1.0"
