package sdktest_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/baldurhq/baldurd/internal/pgtest"
	"github.com/baldurhq/baldurd/sdk/go/baldur/pgfence"
	_ "github.com/jackc/pgx/v5/stdlib"
)

// openDB connects to the test PostgreSQL (internal/pgtest).
func openDB(t *testing.T) *sql.DB {
	t.Helper()
	dsn := pgtest.DSN(t)
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		t.Fatalf("PostgreSQL at %s: %v (set BALDUR_TEST_PG_DSN)", dsn, err)
	}
	return db
}

func TestGuardRefusesLowerTokens(t *testing.T) {
	db := openDB(t)
	table := fmt.Sprintf("fence_test_%d", time.Now().UnixNano())
	g, err := pgfence.New(table)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := g.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Exec("DROP TABLE " + table) })
	write := func(token uint64) error {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := g.Check(ctx, tx, "billing-export", token); err != nil {
			tx.Rollback()
			return err
		}
		return tx.Commit()
	}
	for _, tc := range []struct {
		token uint64
		ok    bool
	}{{10, true}, {10, true}, {12, true}, {11, false}, {5, false}, {40, true}, {39, false}} {
		err := write(tc.token)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, pgfence.ErrStaleToken)) {
			t.Fatalf("token %d: err %v, want ok=%v", tc.token, err, tc.ok)
		}
	}
	if h, _ := g.Highest(ctx, db, "billing-export"); h != 40 {
		t.Fatalf("highest = %d, want 40", h)
	}
	// Concurrent holders: whatever the interleaving, the accepted tokens are
	// non-decreasing in commit order.
	var mu sync.Mutex
	var accepted []uint64
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				tok := uint64(100 + (w*7+i*13)%50)
				tx, _ := db.BeginTx(ctx, nil)
				if g.Check(ctx, tx, "race", tok) != nil {
					tx.Rollback()
					continue
				}
				mu.Lock() // record under the row lock, before commit releases it
				accepted = append(accepted, tok)
				mu.Unlock()
				tx.Commit()
			}
		}()
	}
	wg.Wait()
	for i := 1; i < len(accepted); i++ {
		if accepted[i] < accepted[i-1] {
			t.Fatalf("token %d accepted after %d", accepted[i], accepted[i-1])
		}
	}
	if _, err := pgfence.New("Robert'); DROP TABLE x;--"); err == nil {
		t.Fatal("unsafe table name accepted")
	}
}
