"""livesim: discrete-event simulator for live-commerce streaming."""
