"""Soups: weighted sets of members with per-class thresholds (manifest.py)."""
