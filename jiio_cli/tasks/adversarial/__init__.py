"""Adversarial robustness of DEQ classifiers: attacks, sweeps over budgets, adversarial training."""
