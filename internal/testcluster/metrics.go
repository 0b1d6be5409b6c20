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
	scrape(t, httpAddr, func(line string) {
		if v, ok := strings.CutPrefix(line, name+"_sum "); ok {
			sum, _ = strconv.ParseFloat(v, 64)
		} else if v, ok := strings.CutPrefix(line, name+"_count "); ok {
			count, _ = strconv.ParseFloat(v, 64)
		}
	})
	return sum, count
}

// MetricTotals is MetricSum over every label set of a summary or
// histogram (say, one per peer).
func MetricTotals(t testing.TB, httpAddr, name string) (sum, count float64) {
	t.Helper()
	scrape(t, httpAddr, func(line string) {
		for suffix, dst := range map[string]*float64{"_sum": &sum, "_count": &count} {
			rest, ok := strings.CutPrefix(line, name+suffix)
			if !ok || (rest != "" && rest[0] != ' ' && rest[0] != '{') {
				continue
			}
			if i := strings.LastIndexByte(rest, ' '); i >= 0 {
				v, _ := strconv.ParseFloat(rest[i+1:], 64)
				*dst += v
			}
		}
	})
	return sum, count
}

// MetricValue reads an unlabelled counter or gauge from a node's /metrics
// (0 when the series is absent).
func MetricValue(t testing.TB, httpAddr, name string) (value float64) {
	t.Helper()
	scrape(t, httpAddr, func(line string) {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			value, _ = strconv.ParseFloat(v, 64)
		}
	})
	return value
}

// MetricLabelled reads one labelled series, given its labels as
// /metrics prints them (name="svc"), 0 when absent.
func MetricLabelled(t testing.TB, httpAddr, name, labels string) (value float64) {
	t.Helper()
	scrape(t, httpAddr, func(line string) {
		if v, ok := strings.CutPrefix(line, name+"{"+labels+"} "); ok {
			value, _ = strconv.ParseFloat(v, 64)
		}
	})
	return value
}

// scrape calls fn with each line of a node's /metrics.
func scrape(t testing.TB, httpAddr string, fn func(line string)) {
	t.Helper()
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		fn(sc.Text())
	}
}
