"""The benchmark behind scripts/bench: fake provider, load generator, processes, run, report and plot."""
