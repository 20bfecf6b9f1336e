"""The Pi side: camera, sensors, status LEDs and label buttons, each with a simulated twin.

Only the modules in this package import ``picamera2`` or ``gpiozero``, and only when a
real device is asked for, so ``import pi_backprop.hardware`` works on any laptop. Nothing
here imports the training core: the service composes these parts by array shape only.

=================  ==================================================================
``preprocess``     ``frame_to_input(frame, input_shape, channel_order=)``: uint8 frame
                   -> float32 (C, H, W) in [0, 1]
``camera``         ``PiCamera`` (picamera2), ``camera_status()``
``simulated``      ``SimulatedCamera``, ``SimulatedSensor``, ``camera_dataset``,
                   ``sensor_dataset`` (the ``sim:camera`` / ``sim:sensor`` data)
``sensors``        ``SensorSource`` (windows of readings), ``open_adc_channel`` (MCP3xxx)
``leds``           ``StatusLights``, ``PATTERNS`` (the state -> pattern table)
``buttons``        ``LabelButtons``
``pins``           ``pin_factory()`` (real pins on a Pi, mock pins elsewhere), ``pi_model()``
``pacing``         ``Pacer`` (minimum interval between captures)
=================  ==================================================================

Every device class is a context manager with an idempotent ``close()``; hardware
failures raise ``pi_backprop.exc.HardwareError`` with a one-line message.
"""
