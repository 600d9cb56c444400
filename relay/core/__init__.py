"""Sans-IO protocol and cache logic. No sockets, no clocks: time is passed in."""
