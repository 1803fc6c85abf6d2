"""lmgcot: LM-Guided Chain-of-Thought — a small LM writes rationales that guide a frozen large LM."""

__version__ = "0.1.0"
