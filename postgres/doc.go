// Package postgres keeps the dead-letter queue in PostgreSQL (pgx), for
// volumes beyond what a replicated state machine should hold
// (`baldurd --dlq-store=postgres --postgres-dsn=...`). It applies the same
// dlq.Prepare / dlq.Transition rules as the Raft store, takes replay
// leases with FOR UPDATE SKIP LOCKED, and applies its schema migrations at
// start under an advisory lock. [Store] is the table behind dlq.Store.
//
// Only the server package imports it.
package postgres
