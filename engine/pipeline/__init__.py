"""Orchestration only: a spec run end to end (``run``), the stages it strings together (``stages``), the
token-attribution command (``tokens``) and imported scores (``import_scores``).
"""
