"""Integrations with other systems (Ray Data)."""
