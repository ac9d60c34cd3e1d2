package etcdstore

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pocketkms/kms/store"
)

// ErrUnavailable: the cluster did not answer in time (no member reachable,
// no leader, or the request's deadline passed). It comes wrapped with the
// cause, which matches context.DeadlineExceeded when a deadline passed.
// On Apply it also matches store.ErrUncertain: the change may have landed.
var ErrUnavailable = errors.New("etcdstore: cluster unavailable")

// ErrNotLeader: an Apply made under the context Lead gave its job found
// the leadership lost (a successor may have been elected). Nothing was
// written.
var ErrNotLeader = errors.New("etcdstore: no longer the elected leader")

// ErrChangeTooLarge: a change needs more operations in one transaction
// than the cluster takes (--max-txn-ops; see WithMaxTxnOps). Nothing was
// written. The Engine's changes stay far below etcd's default of 128:
// the largest, destroying a key of MaxVersions versions, deletes the
// versions with one range delete.
var ErrChangeTooLarge = errors.New("etcdstore: change too large for one etcd transaction")

// errCode returns the gRPC code of an etcd client error.
func errCode(err error) codes.Code {
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return ee.Code()
	}
	return status.Code(err)
}

// rpcErr classifies the failure of a request made under the caller's ctx:
// the caller's cancellation is returned as is; a deadline, an unreachable
// cluster or a cluster without a leader is ErrUnavailable.
func rpcErr(ctx context.Context, err error) error {
	if errors.Is(ctx.Err(), context.Canceled) {
		return ctx.Err()
	}
	switch errCode(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}

// notWritten reports whether a failed Txn certainly wrote nothing: the
// cluster refused the request itself (too large, too many operations,
// no space, not allowed). Any other failure (a lost connection, a
// deadline, a leader change) may have come after the change committed.
func notWritten(err error) bool {
	switch errCode(err) {
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange,
		codes.PermissionDenied, codes.Unauthenticated, codes.ResourceExhausted:
		return true
	}
	return false
}

// applyErr wraps a failed Txn: store.ErrUncertain unless it certainly
// wrote nothing.
func applyErr(ctx context.Context, err error) error {
	if notWritten(err) {
		return fmt.Errorf("etcdstore: apply: %w", rpcErr(ctx, err))
	}
	return fmt.Errorf("etcdstore: apply: %w: %w", store.ErrUncertain, rpcErr(ctx, err))
}
