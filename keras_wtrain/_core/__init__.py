"""Shared pieces with no technique logic: backend check, kernel swap, layer predicates, validation, data adapters,
random bits, the loss-at-weights evaluator, batch-norm re-estimation and every use of a non-public Keras name
(`_keras_private`). Nothing here is public API; the technique packages import from it.
"""
