"""The evaluation stage and its report pieces.

`run` computes every number the report states in one run (models from `comparisons`, speed from `efficiency`);
`cli` is the `packetclip-train evaluate` command, `real_cli` and `lab_run_cli` the `evaluate-real` and
`evaluate-lab-run` commands over `real` and `lab_run`. `metrics` turns truth labels and class probabilities into
JSON-ready numbers with their counts, `figures` draws them, `report` renders a results dict into markdown; none of
those three trains or runs a model: the caller supplies the scores.
"""
