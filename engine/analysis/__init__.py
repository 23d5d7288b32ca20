"""The paper's three analyses, run as stages of a pipeline run (spec ``analysis.stages``).

- ``ihvp``        (:mod:`engine.analysis.ihvp_error`): iHVP approximation error vs subset size, damping, steps.
- ``convergence`` (:mod:`engine.analysis.convergence`): losses, generation accuracy, score stability per epoch.
- ``retrain``     (:mod:`engine.analysis.retrain`): parameter change vs output change under removal, next to the
  noise floor of retraining; the LDS (:mod:`engine.analysis.lds`) and the counterfactual check; retrainings kept
  in the retrain bank (:mod:`engine.analysis.bank`); tables in :mod:`engine.analysis.retrain_tables`.

``engine.analysis.stages`` runs them after scoring (what the pipeline calls): one Parquet file per table, each
declared in ``engine.runfolder.runformat``. What each analysis reads and how the pages name it: the catalog
(``engine.catalog.analyses``).
"""
