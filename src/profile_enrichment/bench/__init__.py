"""The benchmark harness (`profile-enrichment bench`, `make bench`).

:mod:`.harness` generates (and caches) data, times the pipeline's stages and the baselines in
one run, and writes ``bench/results/<date>-<machine>.json`` + ``.md``; :mod:`.baselines` holds
the references (raw DuckDB, pandas, lifetimes), each run in its own measured process.
"""
