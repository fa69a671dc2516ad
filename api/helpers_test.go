package api

import (
	"os"

	"github.com/notifyd/notifyd/dispatch"
)

func rateLimit(perSecond float64, burst int) *dispatch.RateLimit {
	return &dispatch.RateLimit{PerSecond: perSecond, Burst: burst}
}

func statMode(path string) (os.FileMode, error) {
	st, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	return st.Mode().Perm(), nil
}
