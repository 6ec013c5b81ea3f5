"""Evaluation: quality metrics, rate accounting, conventional anchors, BD deltas and plots.

Submodules: ``metrics`` (per-frame metrics and ``evaluate_sequences``), ``rate``
(``RateReport``), ``anchors`` (``anchor_code``), ``bd`` (``bd_rate``, ``bd_quality``) and
``plots`` (RD and strip PNGs). Definitions are in docs/metrics.md. Import the submodule you
need; this package imports nothing heavy by itself.
"""
