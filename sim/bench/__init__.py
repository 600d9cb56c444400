"""`livesim bench`: a scenario run against the real relay on loopback, and held to the model."""
