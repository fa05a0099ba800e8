"""ECG-LM: an ECG language model pipeline (Yang et al., Health Data Science 2025)."""

__version__ = "0.1.0"


def load(folder, **kwargs):
    """Load a fine-tuned ECG-LM (an ``ecglm finetune-chat`` output folder) to chat with, in a script or a notebook.

        import ecglm
        model = ecglm.load("results/demo/chat")
        print(model.chat("What does this ECG show?", ecg="00001_hr.hea", age=63, sex="male"))

    Returns an :class:`ecglm.chat.session.ChatModel`; ``kwargs`` go to :meth:`~ecglm.chat.session.ChatModel.load`
    (``llm``, ``device``, ``dtype``, ``settings``, ``guidelines``)."""
    import importlib

    # imported by name: the stages below read ``ecglm.__version__`` from this module, and the chat (the
    # package's top layer) must not become their import
    return importlib.import_module("ecglm.chat.session").load(folder, **kwargs)
