"""Real load for the relay: viewers (and later buyers) driven from asyncio."""
