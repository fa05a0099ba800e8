"""Stage family 3, training: encoder pretraining, the demo LLM, and the alignment of encoder + projector
against the frozen LLM, on one shared runtime (device, autocast, threads)."""
