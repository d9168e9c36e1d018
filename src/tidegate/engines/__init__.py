"""Engines: the one seam behind which jobs really run.

The scheduler talks to engines only through ``tidegate.engines.base.Engine``; it never
imports Beam or Flink. Each engine module imports its engine's libraries lazily and
runs the job in processes of its own.
"""
