// Command replayworker is a test program for internal/e2e: an SDK replay
// worker whose handler succeeds, fails or hangs, printing one line per
// replay attempt.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/baldurhq/baldurd/sdk/go/baldur"
)

func main() {
	addrs := flag.String("addrs", "127.0.0.1:7400", "baldurd gRPC addresses")
	id := flag.String("id", "worker", "worker id")
	domain := flag.String("domain", "payment", "domain to replay")
	mode := flag.String("mode", "succeed", "succeed, fail or hang")
	lease := flag.Duration("lease", 5*time.Second, "replay lease")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	c, err := baldur.Dial(ctx, *addrs, baldur.WithInstanceID(*id), baldur.WithSpoolDir(os.TempDir(), 10))
	if err != nil {
		fmt.Fprintln(os.Stderr, "replayworker:", err)
		os.Exit(1)
	}
	defer c.Close()
	c.DLQ().HandleReplay(*domain, func(ctx context.Context, e *baldur.Entry, key string) error {
		fmt.Printf("replaying %s key=%s\n", e.Id, key)
		switch *mode {
		case "fail":
			return errors.New("handler failed on purpose")
		case "hang":
			select {} // until the process is killed
		}
		return nil
	}, baldur.WithReplayLease(*lease), baldur.WithReplayPoll(100*time.Millisecond))
	<-ctx.Done()
}
