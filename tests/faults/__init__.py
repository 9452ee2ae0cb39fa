"""Load with faults (killed workers, Redis restarts, database outages) and hostile input."""
