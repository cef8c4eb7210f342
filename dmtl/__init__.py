"""dmtl: multi-task learning of classification tasks with little or no annotation overlap.

Reimplements Kollias, Sharmanska & Zafeiriou, "Distribution Matching for Multi-Task Learning of
Classification Tasks: a Large-Scale Study on Faces & Beyond" (AAAI 2024).
"""
__version__ = "0.1.0"
