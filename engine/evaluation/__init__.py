"""Judging score matrices: metrics (``metrics``: Acc@1, Coverage@k, AUPRC, agreement), the run's metric
tables (``tables``), concentration of influence (``concentration``) and the numerical self-checks (``checks``).
"""
