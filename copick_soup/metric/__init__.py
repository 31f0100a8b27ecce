"""The CZII CryoET Object Identification metric (weighted F-beta, beta = 4)."""

from copick_soup.metric.czii import ClassScore, Score, count_matches, score_picks
from copick_soup.metric.project import score_project

__all__ = ["ClassScore", "Score", "count_matches", "score_picks", "score_project"]
