"""Stand-ins for the outside world: the Live API emulator, the simulated caller, the load tester."""
