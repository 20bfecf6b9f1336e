"""The long-running service (``pi-backprop run``): its loop, capture of labelled samples,
what is done with each prediction, the configuration file and systemd's notify protocol.
The only layer that composes hardware, storage and training."""
