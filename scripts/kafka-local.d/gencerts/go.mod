module github.com/notifyd/notifyd/scripts/kafka-local.d/gencerts

go 1.26
