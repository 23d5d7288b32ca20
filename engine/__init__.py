"""Influence Explorer compute engine: fine-tune, per-sample gradients, attribution methods, metrics, run folders.

Sign convention used everywhere in this package: a score ``s(z_i, z')`` is LARGER when training sample
``z_i`` is MORE responsible for test sample ``z'``. The paper's influence value is ``IF = -s``.
"""

__version__ = "0.1.0"
