"""What survives a power cut: checkpoints (weights, optimizer state, step, RNG, data
position, metrics) and the SQLite sample store, both written atomically, plus the readers
of users' ``.npy``/``.npz`` files. Imports the core and model definitions, nothing above."""
