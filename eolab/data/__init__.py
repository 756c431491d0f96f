"""Data: band metadata, readers for real EO sources, the sample schema, the packed cache, statistics."""
