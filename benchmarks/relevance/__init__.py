"""Relevance evaluation harness (issue 7): graded query sets from the catalogue, metrics, rankers, CLI.

- `metrics`: nDCG@k (graded gains), recall@k, hit@k, MRR — pure functions.
- `titles`, `judgements`: query sets and graded judgements derived from the dataset's own fields;
  `plot_queries`: the hand-written plot descriptions (the one set not derived by rule).
- `systems`: random and BM25 baselines, and the service's search/similarity paths in process.
- `evaluate`, `report`: run every ranker on every set; Markdown and JSON.
- `workspace`, `pictures`: the index under evaluation and its picture queries.

Run `python -m benchmarks.relevance --help`.
"""
