"""Fixtures for tests and benchmarks, in the pipeline's own formats (nothing in the pipeline imports them).

- `interplay.testing.posteriors`: synthetic posterior files (exact prior draws, small or streamed large).
- `interplay.testing.demo`: a small synthetic study with every analysis table, to draw every figure
  without sampling (tests/test_figures.py; ``demo.render_all(root)`` for restyling figures).
"""
