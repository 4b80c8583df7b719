"""Data tools: the taxi-like data generator (data/generate.py)."""
