"""The worker of the fault runs: `arq load_worker.Settings`, with `tests/faults` on the path.

Its jobs time out after 2 seconds, so a job whose worker was killed runs again 12 seconds
later (arq: job timeout + 10 s) instead of 70.
"""

from __future__ import annotations

from abadges import badges
from abadges.worker import worker_settings
from tests.faults.load import BADGES

for badge_class in BADGES:
    badges.register(badge_class)

Settings = worker_settings(job_timeout=2, poll_delay=0.05)
