"""kube-audit-relay: the kube-apiserver audit webhook that publishes each event to Kafka."""
