/* nbdkit-raid: members that come and go.
 *
 * THEORY
 *
 * A member is *away* when it holds a role but cannot be reached: an NBD
 * member whose connection was lost or that stopped answering (state.c
 * turns such an error into the state missing, not faulty), or a member
 * that was not given, or not reachable, at the start.  While it is away
 * the array serves degraded and its map of missed regions (missed.h)
 * records what it misses.  This file owns what happens to it next, in one
 * watcher thread per array, driven by the state's `changed` condition and
 * by its own deadlines:
 *
 *   - reconnect: an away NBD member is connected again to the same URI
 *     (member_reconnect_within), with exponential backoff
 *     (AWAY_BACKOFF_MIN_NS doubling to AWAY_BACKOFF_MAX_NS); one attempt's
 *     connect and handshake take at most AWAY_CONNECT_MAX_NS and end
 *     before the member's write-off, so an address that swallows packets
 *     cannot hold an attempt past the moment the member is back.  It is taken back only if its own
 *     newest record names this array and this member (array and member
 *     UUID) and is not newer than the array's; anything else — another
 *     array's export at that URI, a member that moved on — is refused and
 *     logged, and the member stays away.  Taken back, it is stale (missing
 *     -> stale, judged for a delta by missed_judge) and the sync worker
 *     rejoins it.
 *   - a spec given at the start that could not be reached (a pending
 *     spec) is tried the same way, through the management path that `add`
 *     uses, rejoining only: a pending spec that is not an absent member of
 *     this array is dropped with a message, never added as a spare.
 *   - member timeout: a member away longer than member-timeout seconds
 *     after its connection was lost is written off (missing -> faulty), so
 *     that a spare takes its role.  A member absent since the start is
 *     never written off (nothing says it failed); after the same grace a
 *     spare may take its role (away_in_grace), and the watcher wakes the
 *     worker when the grace ends.
 *   - a spare whose connection was lost (no role: it holds no data) is
 *     reconnected the same way; it is used again only once its superblock
 *     shows this array and this member (try_spare; unverified until then,
 *     also when the reconnect succeeded and the check did not).
 *   - maps begun while a member went away are made durable, and maps are
 *     written whole to members that came into use (missed_settle).
 *
 * The watcher never holds the state lock across member I/O (reconnect,
 * record reads, the add path); every decision is re-checked under the
 * lock afterwards (the member may have been failed, removed or taken back
 * meanwhile: then the watcher's result is dropped).  It stops before the
 * members are closed.
 */
#ifndef RAIDCORE_AWAY_H
#define RAIDCORE_AWAY_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "sb.h"

struct raid_array;

#define AWAY_BACKOFF_MIN_NS 100000000ull       /* 0.1 s */
#define AWAY_BACKOFF_MAX_NS 5000000000ull      /* 5 s */
#define AWAY_CONNECT_MIN_NS 500000000ull       /* one attempt's connect bound: */
#define AWAY_CONNECT_MAX_NS 3000000000ull      /* see connect_bound in away.c */

struct away_try {                 /* when to try something again */
  uint64_t next_ns, backoff_ns;
  uint32_t logged;                /* hash of the failure last logged (0:
                                     none): a repeat is not logged again */
};

struct away_ctl {
  pthread_t thread;
  bool started, stop;             /* state lock */
  struct away_try member[SB_MAX_MEMBERS];
  bool grace_over[SB_MAX_MEMBERS];          /* the worker was told */
  char *pending[SB_MAX_MEMBERS];            /* specs not reached at start */
  struct away_try pending_try[SB_MAX_MEMBERS];
  int npending;
};

/* Start / stop the watcher (after any fork; before members close). */
int away_start (struct raid_array *a);
void away_stop (struct raid_array *a);
/* Free what the watcher keeps (at close, after away_stop). */
void away_fini (struct raid_array *a);

#endif
