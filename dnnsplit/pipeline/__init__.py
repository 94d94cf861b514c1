"""`dnnsplit pipeline`: one config from model to shipped segments, a report, and budgets as exit codes."""
