"""The physical system model: wireless channel, per-round latency, seeded scenario generation. Pure numpy."""
