"""Soups: the search of member weights, per-class thresholds and cross-class suppression on validation runs
(search.py), and the `copick-soup soup` job that writes the soup manifest (build.py)."""
