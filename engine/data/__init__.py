"""Task data: the built-in generators and the importers of user datasets (``tasks/``), encoding samples into
token ids and loss masks (``encoding``), dataset folders and uploads (``datasets``, ``uploads``), BM25's word
statistics (``lexical``).
"""
