"""rlspeedrun's referee: runs an agent in a child process, owns the clock and the evaluation,
and records time-to-threshold. See PROTOCOL.md for the rules in words."""
