"""Over-the-air updates: signed bundles, A/B releases and the health gate (docs/updates.md)."""
