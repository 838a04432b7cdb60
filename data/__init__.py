"""Embedded default prompt set, shipped as package data `lens_cache.data`."""
