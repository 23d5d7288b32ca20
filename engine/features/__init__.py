"""What methods read, computed once per checkpoint: the feature plan (``plan``), per-sample gradients and
K-FAC sums (``grads``), RepT parts (``rept``), random projections (``projection``), the feature stage
(``stage``), its on-disk cache (``cache``), torchrun ranks (``distributed``) and the types methods read
(``types``: Features, TrainData).
"""
