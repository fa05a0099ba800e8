"""The demo world: a synthetic PTB-XL / PTB-XL+ / ECG-QA / HealthCareMagic look-alike.

``ecglm demo-data`` builds it locally and deterministically (same seed, byte-identical files) so that
the whole pipeline runs without network on data of the real datasets' shape and quirks:

- :mod:`ecglm.data.demo.labels`: the records (patients, SCP codes at PTB-XL's class frequencies, folds,
  metadata columns, label noise, oversampling of rare zero-shot classes);
- :mod:`ecglm.data.demo.synth`: 12-lead signals from a cardiac dipole model that carry those labels;
- :mod:`ecglm.data.demo.reports`: German / English / Swedish free-text reports written like PTB-XL's;
- :mod:`ecglm.data.demo.ptbxl`: the PTB-XL 1.0.3 and PTB-XL+ 1.0.1 file trees;
- :mod:`ecglm.data.demo.ecgqa`, :mod:`ecglm.data.demo.conversations`: ECG-QA and HealthCareMagic look-alikes;
- :mod:`ecglm.data.demo.world`: the whole generation; :mod:`ecglm.data.demo.cli`: the subcommand.
"""
