"""Ask anything: attribute a NEW prompt (or a candidate training text) against a run's query index.

- :mod:`engine.query.session` (torch): a run loaded once, answering queries (the numbers of the run's methods);
- :mod:`engine.query.build`: the index of an existing run (``python -m engine index --run RUN``);
- :mod:`engine.query.server`: a long-lived HTTP server on localhost holding sessions, one per run;
- :mod:`engine.query.client` (torch-free: the app uses it): find, start and ask the server;
- :mod:`engine.query.api`: :func:`~engine.query.api.ask`, one call from a notebook, a DataFrame back.

This package's ``__init__`` imports nothing, so the torch-free client stays torch-free.
"""
