"""What the content server keeps — payments, payment-identifier bindings, the sign-in replay
guard — behind one interface (`protocols`), on SQLite (the embedded default, one process per
data directory) or PostgreSQL (`postgres`: any number of workers and hosts as one server).
`open_store` picks the backend from a setting."""
