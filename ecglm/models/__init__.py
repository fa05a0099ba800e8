"""The models: the ResNet-18 1D ECG encoder, the projectors and the ECG-LM splice into a frozen LLM, the
tokenization of training samples, and loading, checking and fetching LLMs."""

#: The ways an ECG embedding becomes the LLM's <ecg> token input (built in ecglm.models.multimodal; named here,
#: away from torch, for the align settings).
PROJECTORS: tuple[str, ...] = ("linear", "vocab")
