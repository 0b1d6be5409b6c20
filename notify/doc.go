// Package notify is notifications that reach people (Baldur §14): channels
// (a generic webhook with a signed JSON envelope, a Slack-compatible
// incoming webhook, the log), the events the cluster's changes give
// (Classify, over the audit trail), routing by category and priority with
// escalation during emergencies (Route), and the replicated part of
// delivery: which events were claimed for sending (cooldown per dedup key,
// so a new leader neither repeats nor loses an episode) and what became of
// each delivery. Sending itself is the leader's (the server).
package notify
