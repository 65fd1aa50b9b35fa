"""Cost, the usage ledger and budgets."""
