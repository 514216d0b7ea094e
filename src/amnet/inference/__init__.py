"""Images in, predictions out: decoding, the Predictor, engines (torch, ONNX Runtime)."""
