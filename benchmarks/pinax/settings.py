"""Minimal Django settings for the pinax-badges benchmark; bench.py sets BENCH_DB_*."""

from __future__ import annotations

import os

SECRET_KEY = "abadges-benchmark-only"
DEBUG = False  # with DEBUG on, Django keeps every query in memory
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = ["django.contrib.auth", "django.contrib.contenttypes", "pinax.badges"]
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

if os.environ.get("BENCH_DB_ENGINE") == "postgresql":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ["BENCH_DB_NAME"],
            "HOST": os.environ.get("BENCH_DB_HOST", "127.0.0.1"),
            "PORT": os.environ.get("BENCH_DB_PORT", "5432"),
            "USER": os.environ.get("BENCH_DB_USER", "postgres"),
            "PASSWORD": os.environ.get("BENCH_DB_PASSWORD", ""),
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ["BENCH_DB_NAME"],
        }
    }
