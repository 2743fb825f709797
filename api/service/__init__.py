"""What every protocol shares: turns (`turns.py`) and sessions (`sessions.py`), on the stores of the
web's runtime. Routes and protocol adapters parse and shape; the logic they have in common lives here."""
