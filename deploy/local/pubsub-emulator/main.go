// Command pubsub-emulator serves Google's in-memory Pub/Sub fake (pstest, from
// cloud.google.com/go/pubsub/v2) over plain gRPC on one address, for audit-source pubsub's local
// runs and tests; deploy/local/pubsub builds and starts it. Everything is in memory: a restart
// loses topics, subscriptions and messages. It stops on SIGTERM or SIGINT.
package main

import (
	"flag"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"cloud.google.com/go/pubsub/v2/pstest"
)

func main() {
	address := flag.String("listen", "127.0.0.1:8085", "HOST:PORT to serve the Pub/Sub API on")
	minAckDeadline := flag.Duration("min-ack-deadline", 10*time.Second,
		"the shortest ack deadline a subscription may have (Pub/Sub's is 10s; 1s or more)")
	flag.Parse()
	if *minAckDeadline < time.Second {
		log.Fatalf("pubsub-emulator: -min-ack-deadline must be 1s or more")
	}
	// pstest panics when it cannot listen: find out first, with a clear message.
	probe, err := net.Listen("tcp", *address)
	if err != nil {
		log.Fatalf("pubsub-emulator: cannot listen on %s: %v", *address, err)
	}
	probe.Close()
	pstest.SetMinAckDeadline(*minAckDeadline)
	server := pstest.NewServerWithAddress(*address)
	log.Printf("pubsub-emulator: serving the Pub/Sub API on %s", server.Addr)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
	if err := server.Close(); err != nil {
		log.Printf("pubsub-emulator: close: %v", err)
	}
}
