// Command leaseworker is a test program for internal/e2e: it contends for a
// lease through the Go SDK and, while it holds it, writes rows to
// PostgreSQL through the pgfence guard. It prints one line per event.
package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/baldurhq/baldurd/sdk/go/baldur"
	"github.com/baldurhq/baldurd/sdk/go/baldur/pgfence"
	_ "github.com/jackc/pgx/v5/stdlib"
)

func main() {
	addrs := flag.String("addrs", "127.0.0.1:7400", "baldurd gRPC addresses")
	id := flag.String("id", "worker", "holder id")
	dsn := flag.String("dsn", "", "PostgreSQL DSN")
	resource := flag.String("resource", "mutex", "lease name")
	table := flag.String("table", "mutex_writes", "table for the protected writes")
	fence := flag.String("fence", "baldur_fence", "fence table")
	ttl := flag.Duration("ttl", 5*time.Second, "lease TTL")
	flag.Parse()
	if err := run(*addrs, *id, *dsn, *resource, *table, *fence, *ttl); err != nil {
		fmt.Fprintln(os.Stderr, "leaseworker:", err)
		os.Exit(1)
	}
}

func run(addrs, id, dsn, resource, table, fenceTable string, ttl time.Duration) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	guard, err := pgfence.New(fenceTable)
	if err != nil {
		return err
	}
	c, err := baldur.Dial(ctx, addrs, baldur.WithInstanceID(id))
	if err != nil {
		return err
	}
	defer c.Close()
	for ctx.Err() == nil {
		lease, err := c.Leases().Acquire(ctx, resource, ttl)
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		fmt.Printf("acquired token=%d\n", lease.FencingToken())
		for ctx.Err() == nil && lease.Valid() {
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				continue
			}
			err = guard.Check(ctx, tx, resource, lease.FencingToken())
			if err == nil {
				_, err = tx.ExecContext(ctx, `INSERT INTO `+table+` (worker, token, written_at) VALUES ($1, $2, clock_timestamp())`, id, int64(lease.FencingToken()))
			}
			if err != nil {
				tx.Rollback()
				if errors.Is(err, pgfence.ErrStaleToken) {
					fmt.Printf("rejected token=%d\n", lease.FencingToken())
					break
				}
				continue
			}
			if err := tx.Commit(); err == nil {
				fmt.Printf("wrote token=%d\n", lease.FencingToken())
			}
			time.Sleep(50 * time.Millisecond)
		}
		fmt.Printf("stopped token=%d valid=%v\n", lease.FencingToken(), lease.Valid())
		rctx, cancel := context.WithTimeout(context.Background(), time.Second)
		lease.Release(rctx)
		cancel()
	}
	return nil
}
