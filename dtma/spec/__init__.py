"""Pure: the toolbox spec, its validation against the agent's policy, and canonical hashing."""
