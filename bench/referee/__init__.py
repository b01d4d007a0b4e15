"""What is measured: the agent's process and its sandbox, the wire, the clock, the evaluation, the accounting, the
budgets and the records' writer. Governed by PROTOCOL.md; imports nothing from bench/analysis/ or bench/'s top
(CONTRIBUTING.md)."""
