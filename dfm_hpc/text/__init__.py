"""Text libraries the stages use: OASST loading and filters, markdown-safe segmenting, the translators, PII.

oasst, segment and pii are standard library only; translators imports torch & co. when it loads a model.
"""
