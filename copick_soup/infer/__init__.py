"""Inference: sliding windows with Gaussian blending (windows.py) and test-time augmentation (tta.py)."""
