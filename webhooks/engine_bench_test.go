package webhooks

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"
)

// BenchmarkEndpointIsolation: one merchant's endpoint (instant) alone, and
// beside another merchant's dead one (it accepts connections and never
// answers: every attempt waits for the 1 s time-out), one message each
// per millisecond. It reports the live endpoint's latency, submission to
// arrival, p50 and p99: a dead endpoint must not move them.
//
//	go test -run '^$' -bench BenchmarkEndpointIsolation -benchtime 2000x ./webhooks/
func BenchmarkEndpointIsolation(b *testing.B) {
	for _, beside := range []string{"alone", "beside-a-dead-endpoint"} {
		b.Run(beside, func(b *testing.B) {
			secret, _ := NewSecret()
			var mu sync.Mutex
			sent := map[string]time.Time{}
			var lat []time.Duration
			live := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				at := time.Now()
				mu.Lock()
				lat = append(lat, at.Sub(sent[r.Header.Get("webhook-id")]))
				mu.Unlock()
				w.WriteHeader(http.StatusNoContent)
			}))
			defer live.Close()
			// The dead endpoint: a listener that accepts and never answers.
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			go func() {
				var held []net.Conn
				for {
					c, err := ln.Accept()
					if err != nil {
						for _, c := range held {
							c.Close()
						}
						return
					}
					held = append(held, c)
				}
			}()
			j := newMemJournal()
			e := newTestEngine(b, j, func(c *Config) {
				c.Sender = NewSender(Options{AllowPrivate: true, Timeout: time.Second})
				c.Schedule = DefaultSchedule()
			})
			liveEp := endpoint(b, "live/0", live.URL, secret)
			deadEp := endpoint(b, "dead/0", "http://"+ln.Addr().String(), secret)
			tick := time.NewTicker(time.Millisecond)
			defer tick.Stop()
			b.ResetTimer()
			for i := range b.N {
				<-tick.C
				m := msg(i)
				m.ID = fmt.Sprintf("live-%d", i)
				mu.Lock()
				sent[m.ID] = time.Now()
				mu.Unlock()
				if err := e.Submit(liveEp, m); err != nil {
					b.Fatal(err)
				}
				if beside != "alone" {
					m.ID = fmt.Sprintf("dead-%d", i)
					if err := e.Submit(deadEp, m); err != nil {
						b.Fatal(err)
					}
				}
			}
			for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				mu.Lock()
				n := len(lat)
				mu.Unlock()
				if n >= b.N {
					break
				}
				if time.Now().After(deadline) {
					b.Fatalf("%d of %d delivered", n, b.N)
				}
			}
			b.StopTimer()
			mu.Lock()
			slices.Sort(lat)
			p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
			mu.Unlock()
			b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
		})
	}
}
