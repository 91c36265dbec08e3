"""The PostgreSQL store: a connection pool, versioned migrations, the payment ledger, the
sign-in replay guard and the registry of live instances."""
