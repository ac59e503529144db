"""Engine layer: the only layer that drives onnxruntime. Prepare, calibrate, decide, emit, verify."""
