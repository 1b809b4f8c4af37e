"""From a searched architecture to deployable, verified files: export, weights, quantized files, on-device checks."""
