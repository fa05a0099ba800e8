"""Talking with ECG-LM about one recording: ``ecglm chat`` (a terminal) and the Python API (``ecglm.load``).

- :mod:`ecglm.chat.recording`: a person's recording (WFDB, CSV, NumPy; any rate; 12 leads or a subset), checked.
- :mod:`ecglm.chat.findings`: the recording measured and described by the pipeline's own stages.
- :mod:`ecglm.chat.session`: the fine-tuned model, a conversation, streaming, the context window.
- :mod:`ecglm.chat.cli`: ``ecglm chat``.

The top layer of the package: it imports the stages below and nothing imports it.
"""
