"""Benchmarks of this project's bootstrap against ``redis-cli --cluster``, side by side in one run.

``python -m bench`` starts its own redis-server processes on loopback, runs both
tools alternately over several rounds and writes docs/benchmarks.md and
docs/benchmarks.png. Nothing here is imported by the Pulumi program.
"""
