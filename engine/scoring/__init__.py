"""Scores from features: the methods (``methods/``, one file each), self-influence (``self_influence``) and
the per-token shares of a score (``tokens``, ``token_files``).
"""
