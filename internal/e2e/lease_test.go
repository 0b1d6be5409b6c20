package e2e

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/baldurhq/baldurd/internal/pgtest"
	"github.com/baldurhq/baldurd/sdk/go/baldur/pgfence"
	_ "github.com/jackc/pgx/v5/stdlib"
)

type worker struct {
	id  string
	cmd *exec.Cmd
	mu  sync.Mutex
	log []string
}

func (w *worker) lines() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.log...)
}

// TestFencedMutualExclusionUnderFaults: 5 worker processes contend for one
// lease and write through the fencing guard while the Raft leader is killed
// and the lease holder is paused past its TTL.
func TestFencedMutualExclusionUnderFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	dsn := pgtest.DSN(t)
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	if err := db.PingContext(ctx); err != nil {
		t.Fatalf("PostgreSQL at %s: %v", dsn, err)
	}
	suffix := fmt.Sprint(time.Now().UnixNano())
	writes, fence := "mutex_writes_"+suffix, "mutex_fence_"+suffix
	if _, err := db.Exec(`CREATE TABLE ` + writes + ` (id bigserial PRIMARY KEY, worker text NOT NULL, token bigint NOT NULL, written_at timestamptz NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	g, _ := pgfence.New(fence)
	if err := g.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Exec("DROP TABLE " + writes); db.Exec("DROP TABLE " + fence) })

	c := startCluster(t, 3)
	c.leader("")
	bin := filepath.Join(t.TempDir(), "leaseworker")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/baldurhq/baldurd/internal/e2e/leaseworker").CombinedOutput(); err != nil {
		t.Fatalf("build leaseworker: %v\n%s", err, out)
	}
	var addrs []string
	for _, p := range c.nodes {
		addrs = append(addrs, p.grpc)
	}
	var workers []*worker
	for i := 0; i < 5; i++ {
		w := &worker{id: fmt.Sprintf("w%d", i)}
		w.cmd = exec.Command(bin, "--addrs", strings.Join(addrs[i%3:], ",")+","+strings.Join(addrs[:i%3], ","), "--id", w.id, "--dsn", dsn,
			"--table", writes, "--fence", fence, "--ttl", "5s")
		out, _ := w.cmd.StdoutPipe()
		w.cmd.Stderr = os.Stderr
		if err := w.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				w.mu.Lock()
				w.log = append(w.log, sc.Text())
				w.mu.Unlock()
			}
		}()
		workers = append(workers, w)
	}
	defer func() {
		for _, w := range workers {
			w.cmd.Process.Signal(syscall.SIGCONT)
			w.cmd.Process.Kill()
			w.cmd.Wait()
		}
	}()
	holder := func() *worker {
		var who string
		if err := db.QueryRow(`SELECT worker FROM ` + writes + ` ORDER BY written_at DESC LIMIT 1`).Scan(&who); err != nil {
			return nil
		}
		for _, w := range workers {
			if w.id == who {
				return w
			}
		}
		return nil
	}
	if !eventually(20*time.Second, func() bool { return holder() != nil }) {
		t.Fatal("no worker wrote anything")
	}
	time.Sleep(time.Second)
	paused := holder()
	paused.cmd.Process.Signal(syscall.SIGSTOP)
	t.Logf("paused holder %s", paused.id)
	// Kill the Raft leader while the holder is frozen.
	li := c.leader("")
	c.nodes[li].cmd.Process.Signal(syscall.SIGKILL)
	<-c.nodes[li].done
	c.nodes[li].cmd = nil
	c.leader(c.nodes[li].id)
	time.Sleep(9 * time.Second) // past the paused holder's 5s TTL
	paused.cmd.Process.Signal(syscall.SIGCONT)
	t.Logf("resumed %s", paused.id)
	c.start(li)
	time.Sleep(5 * time.Second)

	rows, err := db.Query(`SELECT worker, token, written_at FROM ` + writes + ` ORDER BY written_at, id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var lastToken int64
	owner := map[int64]string{}
	n := 0
	for rows.Next() {
		var who string
		var tok int64
		var at time.Time
		if err := rows.Scan(&who, &tok, &at); err != nil {
			t.Fatal(err)
		}
		n++
		if tok < lastToken {
			t.Fatalf("write by %s with token %d accepted after token %d", who, tok, lastToken)
		}
		if o, ok := owner[tok]; ok && o != who {
			t.Fatalf("token %d used by %s and %s", tok, o, who)
		}
		owner[tok] = who
		lastToken = tok
	}
	holders := map[string]bool{}
	for _, w := range owner {
		holders[w] = true
	}
	t.Logf("%d accepted writes under %d tokens by %d holders", n, len(owner), len(holders))
	if len(owner) < 2 {
		t.Fatalf("the lease never changed hands (tokens %v)", owner)
	}
	// The paused holder, once resumed, either noticed it could no longer
	// confirm its lease (self-fencing) or had its stale write refused.
	lines := paused.lines()
	t.Logf("paused worker's log tail: %v", tail(lines, 4))
	fenced := false
	for _, l := range lines {
		fenced = fenced || strings.HasPrefix(l, "stopped ") || strings.HasPrefix(l, "rejected ")
	}
	if !fenced {
		t.Fatalf("the paused holder neither self-fenced nor was refused: %v", tail(lines, 10))
	}
}

func tail(s []string, n int) []string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
