"""Scene generators: `toy` (analytic, in memory, for tests) and the Mitsuba room renderer (`labelfield synth`)."""
