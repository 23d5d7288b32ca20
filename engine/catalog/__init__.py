"""What exists and what it takes, declared torch-free and read by every layer: the methods (``methods``),
the analyses (``analyses``) and the field-rule metadata both use (``fields``).
"""
