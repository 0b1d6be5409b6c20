package testcluster

import (
	"bufio"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// MetricSum reads a summary's or histogram's _sum and _count from the
// Prometheus text a node serves at http://httpAddr/metrics (in-process or
// a baldurd process).
func MetricSum(t testing.TB, httpAddr, name string) (sum, count float64) {
	t.Helper()
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, name+"_sum "); ok {
			sum, _ = strconv.ParseFloat(v, 64)
		} else if v, ok := strings.CutPrefix(line, name+"_count "); ok {
			count, _ = strconv.ParseFloat(v, 64)
		}
	}
	return sum, count
}
