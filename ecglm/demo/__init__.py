"""The demo world: a synthetic PTB-XL / PTB-XL+ / ECG-QA / HealthCareMagic look-alike.

``ecglm demo-data`` builds it locally and deterministically (same seed, byte-identical files) so that
the whole pipeline runs without network on data of the real datasets' shape and quirks:

- :mod:`ecglm.demo.labels`: the records (patients, SCP codes at PTB-XL's class frequencies, folds,
  metadata columns, label noise, oversampling of rare zero-shot classes);
- :mod:`ecglm.demo.synth`: 12-lead signals from a cardiac dipole model that carry those labels;
- :mod:`ecglm.demo.reports`: German / English / Swedish free-text reports written like PTB-XL's;
- :mod:`ecglm.demo.ptbxl`: the PTB-XL 1.0.3 and PTB-XL+ 1.0.1 file trees;
- :mod:`ecglm.demo.ecgqa`, :mod:`ecglm.demo.conversations`: ECG-QA and HealthCareMagic look-alikes;
- :mod:`ecglm.demo.world`: the whole generation; :mod:`ecglm.demo.cli`: the subcommand.
"""
