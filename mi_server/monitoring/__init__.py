"""What monitoring reads over HTTP besides MI: GET /metrics (Prometheus) and GET /health."""
