"""The CZII CryoET Object Identification metric (weighted F-beta, beta = 4), on arrays of Å positions."""

from copick_soup.metric.czii import ClassScore, Score, count_matches, score_picks

__all__ = ["ClassScore", "Score", "count_matches", "score_picks"]
