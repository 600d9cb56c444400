"""Asyncio shells around relay.core: origin, edge relays and the sale service."""
