"""The run folder: its format (``runformat``: tables, manifest, names), writing it atomically (``writer``) and
the score files' layout (``score_layout``). No torch, no DuckDB.
"""
