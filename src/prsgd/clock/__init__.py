"""The wall-clock model: alpha-beta costs, calibration, presets, validation against measured runs."""
