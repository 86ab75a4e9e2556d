"""The runtime: config, sources, run loop, tracklets, matcher, identity store, events, output."""
