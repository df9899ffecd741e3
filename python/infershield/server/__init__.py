"""The gRPC server: Triton drop-in + own API servicers, the error interceptor, the app."""
