"""Example apps: the same small badge site on Starlette, Quart and aiohttp (see README.md)."""
