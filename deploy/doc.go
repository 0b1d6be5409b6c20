// Package deploy holds what runs baldurd outside a developer's machine —
// the Helm chart (helm/baldurd), the Grafana dashboard, the Prometheus
// alert rules and the systemd unit (docs/deploy.md) — and the tests that
// check them: the chart rendered into Kubernetes API types and run as real
// processes, the metrics they use present, the image's build static.
package deploy
