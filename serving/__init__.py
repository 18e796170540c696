"""Serving: TF Serving configuration and a gRPC/REST prediction client."""
