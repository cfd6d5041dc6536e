"""`stillhouse demo`: the whole lifecycle on real local models, on a CPU, in minutes."""
