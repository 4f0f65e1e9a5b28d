"""Repository context under a token budget: index, outline, retrieval.

    tags.py      tree-sitter definitions/references and chunks of one file (pure)
    index.py     files → SQLite/FTS5 cache, kept fresh incrementally
    budget.py    token counters and the priority-order budgeter (never over)
    outline.py   ranked map of signatures (personalized PageRank, binary search)
    retrieve.py  best chunks for a query, or for the code around a cursor
    cli.py       `limner index`, `limner outline`, `limner retrieve`

Nothing here imports tree_sitter at import time; only parsing a file does.
"""
