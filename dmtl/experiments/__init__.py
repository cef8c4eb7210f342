"""Experiments over settings, methods, seeds and folds, written as the paper's tables."""
