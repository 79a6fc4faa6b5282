"""Each system's contract examples, one module per system (``tests/systems/contract.py``)."""
