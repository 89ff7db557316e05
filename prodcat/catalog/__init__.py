"""Catalogue ingestion: platform exports → the product table (DESIGN.md contract).

Modules: ``text`` (cleaning), ``adapter`` (config-driven readers of CSV / JSON Lines / Parquet),
``mapping`` (platform category → Google category id), ``split`` (deterministic splits),
``build`` (the ``prodcat catalog build`` job).
"""
