"""Viewer assets (templates, JS, CSS), shipped as package data `lens_cache.web`."""
