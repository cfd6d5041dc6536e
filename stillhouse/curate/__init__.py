"""Curation: captured calls -> clean, scrubbed, deduplicated, versioned fine-tuning datasets.

Each stage is one module of pure functions over frozen records; `pipeline.py` runs them in order.
Nothing here writes to the store except `snapshot.py`, and it only ever inserts new snapshots.
"""
