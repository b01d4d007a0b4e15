"""What is read from the records: statistics, the regression gate, the report, the history page. Nothing on the run
path imports it (CONTRIBUTING.md)."""
