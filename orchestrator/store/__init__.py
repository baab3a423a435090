"""All PostgreSQL access: the schema, the engine, and the invocation store."""
