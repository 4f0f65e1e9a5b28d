"""Selection by execution: many samples, one pick (`!vote N`, `limner eval --select N`).

    tests.py    the visible tests of a task (MBPP's first assert, HumanEval's
                docstring examples, a buffer's !test lines) and extra inputs
                derived from their arguments
    execute.py  one sandboxed run per candidate: visible tests, probes, held-out tests
    vote.py     behaviour clusters and the pick
    sample.py   N candidates from one or several models (batched on the engine)
    evalsel.py  the fair comparison on one pool of samples, for `limner eval --select`

One implementation: the buffer's `!vote` and the eval call the same functions.
"""
