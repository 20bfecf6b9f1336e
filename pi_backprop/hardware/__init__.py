"""The Pi side: camera, sensors, status LEDs and label buttons, each with a simulated twin.

Only the modules in this package import ``picamera2`` or ``gpiozero``, and only when a
real device is asked for, so ``import pi_backprop.hardware`` works on any laptop. Nothing
here imports the training core: the service composes these parts by array shape only.
"""
