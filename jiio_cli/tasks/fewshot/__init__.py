"""Few-shot adaptation of FiLM-conditioned DEQs: glyph/Omniglot classes and sinusoid regression."""
