"""The HTTP edge: REST, the Open Inference Protocol and its codec, uploads, auth, JSON errors,
the browser pages, OpenAPI, the route table, and the connection-level middleware."""
