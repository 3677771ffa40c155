"""Evaluation report pieces: metrics from score arrays, PNG figures, and the markdown/JSON report.

`metrics` turns truth labels and class probabilities into JSON-ready numbers with their counts, `figures` draws
them, `report` renders a results dict into markdown. None of them trains or runs a model: the caller supplies
the scores.
"""
