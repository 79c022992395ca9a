"""HTTP: thin handlers per audience (citizen, terminal, admin), problem bodies, OpenAPI."""
