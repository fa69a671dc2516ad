//go:build integration

package main

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/notifyd/notifyd/api"
)

// BenchmarkAPILatency measures request -> answer of the HTTP API at 200
// requests/s with instant providers, side by side with the Kafka round
// trip (publish a command, read its result from the results topic) at 200
// commands/s in the same run, against the same notifyd process. It reports
// p50 and p99 of both in ms and the ratio of the p99s. Run it once:
//
//	NOTIFYD_TEST_BROKERS=embedded go test -tags integration -run '^$' -bench APILatency -benchtime 1x ./cmd/notifyd/
func BenchmarkAPILatency(b *testing.B) {
	const (
		rate     = 200
		duration = 15 * time.Second
		warmUp   = 2 * time.Second
	)
	c := newCluster(b, 0)
	key, sum, _ := api.NewKey()
	addr := freePort(b)
	c.start(procOpts{api: fmt.Sprintf(`{listen: %q, keys: [{name: bench, sha256: %q}], rate_limit: {per_second: 0}}`, addr, sum), waitForReady: true})
	n := int((duration + warmUp).Seconds() * rate)
	sessions := make([]string, 2*n)
	for i := range sessions {
		sessions[i] = fmt.Sprintf("s-%d", i)
	}
	c.events(sessions, "paid", 1)

	var mu sync.Mutex
	waiting := map[string]chan struct{}{}
	c.mu.Lock()
	c.onResult = func(id string) {
		mu.Lock()
		ch := waiting[id]
		delete(waiting, id)
		mu.Unlock()
		if ch != nil {
			close(ch)
		}
	}
	c.mu.Unlock()
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	defer hc.CloseIdleConnections()

	httpOnce := func(i int) (time.Duration, error) {
		start := time.Now()
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+api.PathNotifications,
			strings.NewReader(fmt.Sprintf(`{"session_id":"s-%d","channels":["sms"]}`, i)))
		req.Header.Set("Authorization", "Api-Key "+key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return 0, fmt.Errorf("status %d", resp.StatusCode)
		}
		return time.Since(start), nil
	}
	kafkaOnce := func(i int) (time.Duration, error) {
		id := fmt.Sprintf("k-%d", i)
		s := fmt.Sprintf("s-%d", n+i)
		done := make(chan struct{})
		mu.Lock()
		waiting[id] = done
		mu.Unlock()
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := c.writer.WriteMessages(ctx, kafka.Message{Topic: c.topics.Commands, Key: []byte(s), Value: commandJSON(id, s, "sms")}); err != nil {
			return 0, err
		}
		select {
		case <-done:
			return time.Since(start), nil
		case <-ctx.Done():
			return 0, fmt.Errorf("no result for %s", id)
		}
	}

	b.ResetTimer()
	var wg sync.WaitGroup
	var httpLat, kafkaLat []time.Duration
	var lmu sync.Mutex
	tick := time.NewTicker(time.Second / rate)
	began := time.Now()
	for i := 0; i < n; i++ {
		<-tick.C
		measured := time.Since(began) >= warmUp
		for _, series := range []struct {
			run func(int) (time.Duration, error)
			out *[]time.Duration
		}{{httpOnce, &httpLat}, {kafkaOnce, &kafkaLat}} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				d, err := series.run(i)
				if err != nil {
					b.Error(err)
					return
				}
				if measured {
					lmu.Lock()
					*series.out = append(*series.out, d)
					lmu.Unlock()
				}
			}()
		}
	}
	tick.Stop()
	wg.Wait()
	b.StopTimer()
	pct := func(ds []time.Duration, p float64) float64 {
		slices.Sort(ds)
		return float64(ds[int(p*float64(len(ds)-1))].Microseconds()) / 1000
	}
	hp50, hp99, kp50, kp99 := pct(httpLat, 0.5), pct(httpLat, 0.99), pct(kafkaLat, 0.5), pct(kafkaLat, 0.99)
	b.ReportMetric(hp50, "http-p50-ms")
	b.ReportMetric(hp99, "http-p99-ms")
	b.ReportMetric(kp50, "kafka-p50-ms")
	b.ReportMetric(kp99, "kafka-p99-ms")
	b.ReportMetric(hp99/kp99, "p99-ratio")
	b.Logf("%d requests and %d commands at %d/s each: HTTP p50 %.1f ms p99 %.1f ms; Kafka round trip p50 %.1f ms p99 %.1f ms; p99 ratio %.2f",
		len(httpLat), len(kafkaLat), rate, hp50, hp99, kp50, kp99, hp99/kp99)
}
