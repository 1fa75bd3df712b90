"""The fleet replay's parts (bench/fleet_replay.py): the platform's servers, the simulated
agents, the replayed requests and what is measured from the store."""
