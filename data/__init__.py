"""Data tools: the taxi example's data generator (data/generate_taxi.py)."""
