"""Evaluation: suites, generation, sandboxed scoring, reports, repair and replay.

    limner eval SUITE... --model M        (cli.py)
    limner replay --id N --model M        (replay.py)
    `!test CMD` + `!repair N` in a buffer (repair.py)

Data path: suites.py (TOML -> Tasks) -> targets.py (Task -> Request ->
backend or engine) -> store.py (SQLite, resumable) -> score.py (sandbox,
pass@k, similarity) -> report.py (HTML, PNG, JSON).
"""
