"""The shared core, the bottom layer: config loading, atomic writes, completion records, the pairs-dir format,
text hashing and the error type every command reports in one line. It imports nothing else of the project.

Layers, bottom to top (tests/test_layers.py fails on an upward or circular import):
  gte_model.core    this package
  gte_model         the model: pooling, packed forward, load, export
  data_prep         prep and mining          train        training        train.eval   evaluation
  train.app         the application: the `gte` command, the pipeline, its report
"""
