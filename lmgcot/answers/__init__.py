"""Reading answers out of text and scoring them: the bottom layer that data, the student, rewards
and evaluation all share, so it imports nothing else from lmgcot.

`extract`: the answer phrase, rationale/answer split, majority vote; `typed`: answers by type
(number, yes/no, choice, string); `metrics`: normalisation, EM, token F1, aggregation.
"""
