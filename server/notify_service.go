package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/audit"
	"github.com/baldurhq/baldurd/emergency"
	"github.com/baldurhq/baldurd/notify"
	"github.com/baldurhq/baldurd/raftstore"
)

// Notifications are sent by the leader only. Each leader tick it reads the
// audit trail after the replicated cursor, turns records into events
// (notify.Classify), raises their priority during an emergency
// (notify.Escalate), routes them (notify.Route), and claims each routed
// event in the log before sending it: the claim moves the cursor and starts
// the cooldown of its dedup key, so a new leader resumes after it and never
// sends the same episode twice. Delivery is asynchronous (10 s per attempt,
// 3 retries 30 s apart), rate-limited per channel (--notify-rate-per-minute
// 60, --notify-rate-per-hour 300) in the leader's memory, and its outcome is
// recorded in the log.

// Notification settings.
const (
	notifyTimeout = 10 * time.Second
	notifyRetries = 3
	// notifyStale: events older than this when first seen (a cluster
	// that had no channel) are not sent.
	notifyStale = 10 * time.Minute
	notifyBatch = 200
)

// notifier is the leader's sending state.
type notifier struct {
	mu     sync.Mutex
	cursor uint64 // what this leader handled (≥ the replicated cursor)
	// pending are events that are not in the audit trail (the leader's
	// own election), sent with the next tick.
	pending []notify.Event
	sent    map[string][]time.Time // channel → send times within the last hour
	wg      sync.WaitGroup
	client  *http.Client
}

func (n *notifier) allow(channel string, now time.Time, perMinute, perHour int) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.sent == nil {
		n.sent = map[string][]time.Time{}
	}
	times := n.sent[channel]
	for len(times) > 0 && now.Sub(times[0]) >= time.Hour {
		times = times[1:]
	}
	lastMinute := 0
	for _, t := range times {
		if now.Sub(t) < time.Minute {
			lastMinute++
		}
	}
	if lastMinute >= perMinute || len(times) >= perHour {
		n.sent[channel] = times
		return false
	}
	n.sent[channel] = append(times, now)
	return true
}

// notifyTask is the leader task: events from the audit trail to channels.
func (s *Server) notifyTask(ctx context.Context, now time.Time) error {
	var channels []notify.Channel
	var recs []audit.Record
	level := 0
	_ = s.store.View(func(kv raftstore.KV) error {
		channels = notify.Channels(kv)
		s.notes.mu.Lock()
		s.notes.cursor = max(s.notes.cursor, notify.Cursor(kv))
		from := s.notes.cursor
		s.notes.mu.Unlock()
		recs, _, _ = audit.List(kv, audit.Filter{}, notifyBatch, audit.PageToken(from))
		if g := emergency.Get(kv, emergency.GlobalScope); g.Active {
			level = int(g.Level)
		}
		return nil
	})
	s.notes.mu.Lock()
	pending := s.notes.pending
	s.notes.pending = nil
	s.notes.mu.Unlock()
	for _, ev := range pending {
		if err := s.notifyEvent(ctx, channels, ev, level, now); err != nil {
			return err
		}
	}
	for _, rec := range recs {
		if err := s.notifyRecord(ctx, channels, rec, level, now); err != nil {
			return err
		}
		s.notes.mu.Lock()
		s.notes.cursor = max(s.notes.cursor, rec.Seq)
		s.notes.mu.Unlock()
	}
	return nil
}

func (s *Server) notifyRecord(ctx context.Context, channels []notify.Channel, rec audit.Record, level int, now time.Time) error {
	ev, ok := notify.Classify(rec.Seq, rec.Action, rec.Target, rec.Actor, rec.Reason, rec.Time)
	if !ok {
		return nil
	}
	return s.notifyEvent(ctx, channels, ev, level, now)
}

// notifyEvent escalates, routes, claims and sends one event.
func (s *Server) notifyEvent(ctx context.Context, channels []notify.Channel, ev notify.Event, level int, now time.Time) error {
	ev = notify.Escalate(ev, level)
	targets := notify.Route(channels, ev)
	if len(targets) == 0 {
		return nil
	}
	if now.Sub(ev.Time) > notifyStale {
		s.metrics.notifySuppressed.WithLabelValues("stale").Inc()
		return nil
	}
	claim := &raftv1.Command{Actor: systemActor, Reason: "notification claimed", Version: configVersion,
		Body: &raftv1.Command_Notify{Notify: &raftv1.NotifyCommand{Op: raftv1.NotifyCommand_CLAIM, AuditSeq: ev.AuditSeq,
			DedupKey: ev.DedupKey + "/" + ev.Category, CooldownNanos: int64(s.cfg.NotifyCooldown)}}}
	res, err := s.writes.propose(ctx, claim, onLeader)
	if err != nil {
		return fmt.Errorf("claim notification %q: %w", ev.DedupKey, err)
	}
	if !resultOf[notify.Result](res).Claimed {
		s.metrics.notifySuppressed.WithLabelValues("cooldown").Inc()
		return nil
	}
	for _, ch := range targets {
		if !s.notes.allow(ch.Name, now, s.cfg.NotifyPerMinute, s.cfg.NotifyPerHour) {
			s.metrics.notifySuppressed.WithLabelValues("rate_limit").Inc()
			s.recordDelivery(ctx, notify.Delivery{Channel: ch.Name, Event: ev, Result: "suppressed",
				Error: fmt.Sprintf("rate limit (%d a minute, %d an hour)", s.cfg.NotifyPerMinute, s.cfg.NotifyPerHour)})
			continue
		}
		s.notes.wg.Add(1)
		go func() {
			defer s.notes.wg.Done()
			attempts, err := s.deliver(ctx, ch, ev)
			d := notify.Delivery{Channel: ch.Name, Event: ev, Result: "sent", Attempts: attempts}
			if err != nil {
				d.Result, d.Error = "failed", err.Error()
			}
			s.metrics.notifySent.WithLabelValues(ch.Name, ev.Priority, d.Result).Inc()
			s.recordDelivery(context.WithoutCancel(ctx), d)
		}()
	}
	return nil
}

func (s *Server) recordDelivery(ctx context.Context, d notify.Delivery) {
	b, _ := json.Marshal(d)
	cmd := &raftv1.Command{Actor: systemActor, Reason: "notification delivery", Version: configVersion,
		Body: &raftv1.Command_Notify{Notify: &raftv1.NotifyCommand{Op: raftv1.NotifyCommand_RECORD, DeliveryJson: b}}}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := s.writes.propose(cctx, cmd, onLeader); err != nil {
		s.log.Warn("notify.record_failed", "channel", d.Channel, "err", err)
	}
}

// deliver sends one event to one channel: up to 1 + notifyRetries attempts,
// Config.NotifyRetryDelay apart, each within notifyTimeout.
func (s *Server) deliver(ctx context.Context, ch notify.Channel, ev notify.Event) (int, error) {
	if ch.Type == notify.Log {
		s.log.Warn("notify.event", "channel", ch.Name, "category", ev.Category, "priority", ev.Priority, "title", ev.Title, "message", ev.Message)
		return 1, nil
	}
	body := notify.Body(ch, ev, s.cfg.NodeID)
	var err error
	for attempt := 1; ; attempt++ {
		if err = s.post(ctx, ch, body); err == nil {
			return attempt, nil
		}
		if attempt > notifyRetries {
			return attempt, err
		}
		select {
		case <-ctx.Done():
			return attempt, err
		case <-time.After(s.cfg.NotifyRetryDelay):
		}
	}
}

func (s *Server) post(ctx context.Context, ch notify.Channel, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, notifyTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ch.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("request to %s: %v", ch.Host(), err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "baldurd")
	if ch.Type == notify.Webhook {
		ts := s.now().Unix()
		req.Header.Set("X-Baldur-Timestamp", strconv.FormatInt(ts, 10))
		req.Header.Set("X-Baldur-Signature", notify.Signature(ch.Secret, ts, body))
	}
	resp, err := s.notes.client.Do(req)
	if err != nil {
		// The error names the URL: keep the host only.
		return fmt.Errorf("POST to %s: %s", ch.Host(), errText(err))
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("POST to %s: HTTP %d", ch.Host(), resp.StatusCode)
	}
	return nil
}

// errText is an HTTP client error without the URL it quotes.
func errText(err error) string {
	type unwrapper interface{ Unwrap() error }
	if u, ok := err.(unwrapper); ok && u.Unwrap() != nil {
		return u.Unwrap().Error()
	}
	return "request failed"
}

type notifyService struct {
	pb.UnimplementedNotifyServiceServer
	s *Server
}

func channelToPB(c notify.Channel) *pb.NotifyChannel {
	return &pb.NotifyChannel{Name: c.Name, Type: c.Type, Host: c.Host(), HasSecret: c.Secret != "", Categories: c.Categories,
		MinPriority: c.MinPriority, Revision: c.Revision}
}

func (n *notifyService) ListChannels(ctx context.Context, req *pb.ListChannelsRequest) (*pb.ListChannelsResponse, error) {
	if err := n.s.readBarrier(ctx, req.Consistency); err != nil {
		return nil, err
	}
	out := &pb.ListChannelsResponse{}
	_ = n.s.store.View(func(kv raftstore.KV) error {
		for _, c := range notify.Channels(kv) {
			out.Channels = append(out.Channels, channelToPB(c))
		}
		return nil
	})
	return out, nil
}

func (n *notifyService) PutChannel(ctx context.Context, req *pb.PutChannelRequest) (*pb.NotifyChannel, error) {
	ch := notify.Channel{Name: req.Name, Type: req.Type, URL: req.Url, Secret: req.Secret, Categories: req.Categories, MinPriority: req.MinPriority}
	if ch.MinPriority == "" {
		ch.MinPriority = "low"
	}
	if err := ch.Validate(); err != nil {
		return nil, err
	}
	if err := n.s.checkCommandVersion(configVersion); err != nil {
		return nil, err
	}
	b, _ := json.Marshal(ch)
	cmd := newCommand(ctx, "notification channel "+ch.Name)
	cmd.Version = configVersion
	cmd.Body = &raftv1.Command_Notify{Notify: &raftv1.NotifyCommand{Op: raftv1.NotifyCommand_PUT_CHANNEL, ChannelJson: b}}
	r, _, err := proposed[notify.Result](n.s.writes.propose(ctx, cmd, onLeader))
	if err != nil {
		return nil, err
	}
	if r.Channel.Name == "" {
		r.Channel = ch
	}
	return channelToPB(r.Channel), nil
}

func (n *notifyService) DeleteChannel(ctx context.Context, req *pb.DeleteChannelRequest) (*pb.DeleteChannelResponse, error) {
	cmd := newCommand(ctx, "notification channel "+req.Name)
	cmd.Version = configVersion
	cmd.Body = &raftv1.Command_Notify{Notify: &raftv1.NotifyCommand{Op: raftv1.NotifyCommand_DELETE_CHANNEL, Name: req.Name}}
	_, rev, err := proposed[notify.Result](n.s.writes.propose(ctx, cmd, onLeader))
	if err != nil {
		return nil, err
	}
	return &pb.DeleteChannelResponse{Revision: rev}, nil
}

func (n *notifyService) ListNotifications(ctx context.Context, req *pb.ListNotificationsRequest) (*pb.ListNotificationsResponse, error) {
	limit := int(req.Limit)
	switch {
	case limit < 0 || limit > notify.MaxDeliveries:
		return nil, invalidField("limit", fmt.Sprintf("%d is outside 0..%d", limit, notify.MaxDeliveries))
	case limit == 0:
		limit = 100
	}
	if err := n.s.readBarrier(ctx, req.Consistency); err != nil {
		return nil, err
	}
	out := &pb.ListNotificationsResponse{}
	_ = n.s.store.View(func(kv raftstore.KV) error {
		for _, d := range notify.Deliveries(kv, limit) {
			out.Notifications = append(out.Notifications, &pb.Notification{Channel: d.Channel, Category: d.Event.Category, Priority: d.Event.Priority,
				Title: d.Event.Title, Message: d.Event.Message, DedupKey: d.Event.DedupKey, Result: d.Result, Attempts: int32(d.Attempts),
				Error: d.Error, Time: ts(d.Time), EventTime: ts(d.Event.Time)})
		}
		return nil
	})
	return out, nil
}
