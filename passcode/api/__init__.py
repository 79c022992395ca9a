"""HTTP: thin handlers per audience (citizen, terminal, admin), middleware, OpenAPI."""
