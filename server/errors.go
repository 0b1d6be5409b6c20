package server

import (
	"context"
	"errors"
	"fmt"
	"github.com/baldurhq/baldurd/admission"
	"log/slog"
	"net/http"
	"strconv"
	"unicode/utf8"

	"github.com/baldurhq/baldurd/audit"
	"github.com/baldurhq/baldurd/canary"
	"github.com/baldurhq/baldurd/circuit"
	"github.com/baldurhq/baldurd/config"
	"github.com/baldurhq/baldurd/coordination"
	"github.com/baldurhq/baldurd/dlq"
	"github.com/baldurhq/baldurd/emergency"
	"github.com/baldurhq/baldurd/governance"
	"github.com/baldurhq/baldurd/idempotency"
	"github.com/baldurhq/baldurd/internal/fsm"
	"github.com/baldurhq/baldurd/notify"
	"github.com/baldurhq/baldurd/raftstore"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// errorDomain is ErrorInfo.domain on every error baldurd returns.
const errorDomain = "baldur.dev"

// invalidField is an invalid request field found by the server itself.
func invalidField(field, msg string) error {
	return &fsm.ArgumentError{FieldName: field, Code: "INVALID_ARGUMENT", Msg: msg}
}

// errorMapping is one row of the table below.
type errorMapping struct {
	target error
	code   codes.Code
	reason string
}

// errorTable maps sentinel errors (matched with errors.Is, so wrapping
// keeps working) to a status code and a stable reason.
var errorTable = []errorMapping{
	{raftstore.ErrNotLeader, codes.Unavailable, "NOT_LEADER"},
	{raftstore.ErrNoLeader, codes.Unavailable, "NO_LEADER"},
	{errLeaderUnreachable, codes.Unavailable, "LEADER_UNREACHABLE"},
	{raftstore.ErrNotReady, codes.Unavailable, "LEADER_NOT_READY"},
	{raftstore.ErrIndeterminate, codes.Unavailable, "RESULT_UNKNOWN"},
	{raftstore.ErrShutdown, codes.Unavailable, "SHUTTING_DOWN"},
	{raftstore.ErrEntryTooLarge, codes.InvalidArgument, "REQUEST_TOO_LARGE"},
	{raftstore.ErrUnknownMember, codes.NotFound, "MEMBER_NOT_FOUND"},
	{raftstore.ErrBadSnapshot, codes.InvalidArgument, "INVALID_SNAPSHOT"},
	{raftstore.ErrTransferFailed, codes.FailedPrecondition, "TRANSFER_FAILED"},
	{raftstore.ErrAlreadyMember, codes.AlreadyExists, "MEMBER_EXISTS"},
	{raftstore.ErrMembership, codes.FailedPrecondition, "MEMBERSHIP_CHANGE_REFUSED"},
	{circuit.ErrNotFound, codes.NotFound, "CIRCUIT_NOT_FOUND"},
	{coordination.ErrNotFound, codes.NotFound, "LEASE_NOT_FOUND"},
	{dlq.ErrNotFound, codes.NotFound, "DLQ_ENTRY_NOT_FOUND"},
	{dlq.ErrCapacityExceeded, codes.ResourceExhausted, "DLQ_CAPACITY_EXCEEDED"},
	{coordination.ErrNotHolder, codes.PermissionDenied, "NOT_HOLDER"},
	{coordination.ErrJobNotFound, codes.NotFound, "JOB_NOT_FOUND"},
	{coordination.ErrStaleToken, codes.FailedPrecondition, "STALE_FENCING_TOKEN"},
	{emergency.ErrNotActive, codes.FailedPrecondition, "NOT_ACTIVE"},
	{canary.ErrNotFound, codes.NotFound, "ROLLOUT_NOT_FOUND"},
	{governance.ErrApprovalNotFound, codes.NotFound, "APPROVAL_NOT_FOUND"},
	{notify.ErrChannelNotFound, codes.NotFound, "CHANNEL_NOT_FOUND"},
	{idempotency.ErrNotFound, codes.NotFound, "IDEMPOTENCY_KEY_NOT_FOUND"},
	{admission.ErrNotFound, codes.NotFound, "ADMISSION_NOT_FOUND"},
	{config.ErrEntryNotFound, codes.NotFound, "CONFIG_ENTRY_NOT_FOUND"},
	{governance.ErrSelfApproval, codes.PermissionDenied, "SELF_APPROVAL"},
	{canary.ErrJudgment, codes.FailedPrecondition, "JUDGMENT_BLOCKS_PROMOTION"},
	{emergency.ErrRecoveryBlocked, codes.FailedPrecondition, "RECOVERY_BLOCKED"},
	{emergency.ErrAlreadyRecovering, codes.FailedPrecondition, "ALREADY_RECOVERING"},
	{errUpgradePending, codes.FailedPrecondition, "CLUSTER_UPGRADE_PENDING"},
	{errUndecodable, codes.InvalidArgument, "INVALID_COMMAND"},
	{errUnauthenticated, codes.Unauthenticated, "UNAUTHENTICATED"},
	{errNotPeer, codes.PermissionDenied, "PEERS_ONLY"},
	{errPermissionDenied, codes.PermissionDenied, "PERMISSION_DENIED"},
	{errRequestIDReused, codes.AlreadyExists, "REQUEST_ID_REUSED"},
	{errLimit, codes.ResourceExhausted, "LIMIT_REACHED"},
	{context.DeadlineExceeded, codes.DeadlineExceeded, "DEADLINE_EXCEEDED"},
	{context.Canceled, codes.Canceled, "CANCELED"},
}

// httpOverride gives a reason an HTTP status other than the gateway's
// default for its code (Baldur answers 409 for a blocked recovery).
var httpOverride = map[string]int{
	"RECOVERY_BLOCKED":          http.StatusConflict,
	"LEASE_HELD":                http.StatusConflict,
	"DLQ_STATE_CONFLICT":        http.StatusConflict,
	"VERSION_CONFLICT":          http.StatusConflict,
	"ROLLOUT_CONFLICT":          http.StatusConflict,
	"STAGE_CONFLICT":            http.StatusConflict,
	"INVALID_TRANSITION":        http.StatusConflict,
	"ROLLOUT_BLOCKED":           http.StatusConflict,
	"GOVERNANCE_BLOCKED":        http.StatusConflict,
	"APPROVAL_DECIDED":          http.StatusConflict,
	"NOT_EXECUTION_HOLDER":      http.StatusConflict,
	"JUDGMENT_BLOCKS_PROMOTION": http.StatusConflict,
	"LOCK_DELAY":                http.StatusConflict,
	"LEASE_LOST":                http.StatusConflict,
	"STALE_FENCING_TOKEN":       http.StatusConflict,
	"NOT_LEADER":                http.StatusServiceUnavailable,
	"REQUEST_ID_REUSED":         http.StatusConflict,
	"LIMIT_REACHED":             http.StatusTooManyRequests,
}

// toStatus converts any error returned by a service method into a gRPC
// status carrying ErrorInfo{reason}. Statuses (e.g. from a forwarded call)
// pass through. Unknown errors become Internal and are logged.
func toStatus(log *slog.Logger, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var held *coordination.HeldError
	if errors.As(err, &held) {
		return withDetails(codes.FailedPrecondition, "LEASE_HELD", err.Error())
	}
	var delay *coordination.LockDelayError
	if errors.As(err, &delay) {
		return withDetails(codes.FailedPrecondition, "LOCK_DELAY", err.Error())
	}
	var lost *coordination.LostError
	if errors.As(err, &lost) {
		return withDetails(codes.FailedPrecondition, "LEASE_LOST", err.Error())
	}
	var version *config.VersionError
	if errors.As(err, &version) {
		return withInfo(codes.FailedPrecondition, "VERSION_CONFLICT", err.Error(), map[string]string{
			"section": version.Section, "current_version": strconv.FormatUint(version.Current, 10)})
	}
	var approval *approvalRequiredError
	if errors.As(err, &approval) {
		return approval.status()
	}
	var decided *governance.DecidedError
	if errors.As(err, &decided) {
		return withDetails(codes.FailedPrecondition, "APPROVAL_DECIDED", err.Error())
	}
	var token *idempotency.TokenError
	if errors.As(err, &token) {
		return withDetails(codes.FailedPrecondition, "NOT_EXECUTION_HOLDER", err.Error())
	}
	var gate *gateError
	if errors.As(err, &gate) {
		return withInfo(codes.FailedPrecondition, "GOVERNANCE_BLOCKED", err.Error(), map[string]string{"gate": gate.d.Reason, "operation": gate.operation})
	}
	var rollout *canary.ConflictError
	if errors.As(err, &rollout) {
		return withInfo(codes.FailedPrecondition, "ROLLOUT_CONFLICT", err.Error(), map[string]string{"section": rollout.Section, "holder": rollout.Holder})
	}
	var stage *canary.StageConflictError
	if errors.As(err, &stage) {
		return withInfo(codes.FailedPrecondition, "STAGE_CONFLICT", err.Error(), map[string]string{"current_stage_index": strconv.Itoa(stage.Current)})
	}
	var transition *canary.TransitionError
	if errors.As(err, &transition) {
		return withDetails(codes.FailedPrecondition, "INVALID_TRANSITION", err.Error())
	}
	var blocked *canary.BlockedError
	if errors.As(err, &blocked) {
		return withDetails(codes.FailedPrecondition, "ROLLOUT_BLOCKED", err.Error())
	}
	var conflict *dlq.ConflictError
	if errors.As(err, &conflict) {
		return withDetails(codes.FailedPrecondition, "DLQ_STATE_CONFLICT", err.Error())
	}
	if errors.Is(err, dlq.ErrBadPageToken) {
		return withDetails(codes.InvalidArgument, "INVALID_PAGE_TOKEN", err.Error(),
			&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "page_token", Description: err.Error()}}})
	}
	var ae *fsm.ArgumentError
	if errors.As(err, &ae) {
		return withDetails(codes.InvalidArgument, ae.Code, err.Error(),
			&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: ae.FieldName, Description: err.Error()}}})
	}
	if errors.Is(err, audit.ErrBadPageToken) {
		return withDetails(codes.InvalidArgument, "INVALID_PAGE_TOKEN", err.Error(),
			&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "page_token", Description: err.Error()}}})
	}
	for _, m := range errorTable {
		if errors.Is(err, m.target) {
			return withDetails(m.code, m.reason, err.Error())
		}
	}
	log.Error("server.request_failed", "err", err)
	return withDetails(codes.Internal, "INTERNAL", err.Error())
}

// withInfo is withDetails with ErrorInfo metadata (what a client needs to
// act on the error without parsing its message).
func withInfo(code codes.Code, reason, msg string, md map[string]string) error {
	st := status.New(code, shortMessage(msg))
	if withInfo, err := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: errorDomain, Metadata: md}); err == nil {
		st = withInfo
	}
	return st.Err()
}

func withDetails(code codes.Code, reason, msg string, badRequest ...*errdetails.BadRequest) error {
	msg = shortMessage(msg)
	for _, br := range badRequest {
		for _, v := range br.FieldViolations {
			v.Field, v.Description = shortMessage(v.Field), shortMessage(v.Description)
		}
	}
	st := status.New(code, msg)
	if withInfo, err := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: errorDomain}); err == nil {
		st = withInfo
	}
	for _, br := range badRequest {
		if withBR, err := st.WithDetails(br); err == nil {
			st = withBR
		}
	}
	return st.Err()
}

// statusReason extracts ErrorInfo.reason from a status error.
func statusReason(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return ""
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.Reason
		}
	}
	return ""
}

// statusField extracts the first BadRequest field from a status error.
func statusField(st *status.Status) string {
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok && len(br.FieldViolations) > 0 {
			return br.FieldViolations[0].Field
		}
	}
	return ""
}

// maxMessage bounds an error message: errors name what is wrong and quote
// at most a short prefix of the input (a 900 KB value must not come back in
// a 900 KB error).
const maxMessage = 512

func shortMessage(msg string) string {
	if len(msg) <= maxMessage {
		return msg
	}
	cut := maxMessage
	for cut > 0 && !utf8.RuneStart(msg[cut]) {
		cut--
	}
	return msg[:cut] + fmt.Sprintf("… (%d bytes more)", len(msg)-cut)
}
