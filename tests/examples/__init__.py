"""The example apps, driven over real HTTP, and the demo."""
