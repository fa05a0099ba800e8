"""The models: the ResNet-18 1D ECG encoder, the projectors and the ECG-LM splice into a frozen LLM, the
tokenization of training samples, and loading, checking and fetching LLMs."""
