/* nbdkit-raid: the sync worker — the thread that runs background jobs.
 *
 * The jobs, their state machine and who may change it: job.h.  This file
 * owns the worker thread, the jobs other than the reshape (resync,
 * recovery onto a spare, replace, check, repair: their sync_ops tables) and
 * the choice of the next job.
 *
 * The worker's loop.  It sleeps on a->changed while IDLE or FROZEN (woken
 * by any state change, or a timer for the bitmap cleaner); while RUNNING it
 * runs one bounded batch at a time with no lock held (`busy` tells freeze
 * to wait for it), then re-reads the state: a freeze, abort or cancel takes
 * effect after at most one batch.  Throttling pauses are timed waits on
 * a->changed that any state change cuts short.  It never spins: every loop
 * iteration either sleeps or completes a batch that makes progress (a
 * batch that makes none fails the job; one that runs out of memory is
 * retried after a pause that doubles each time, a few times, then fails).
 *
 * Choosing the next job (sync_next_job, under the management lock, so that
 * it never races a management request): first of all, once, a replace
 * the record at the start names is begun again or forgotten (job.h);
 * then whenever the worker is idle and
 * the array state changed since it last looked — a member failed, a spare
 * was added, a job ended — it begins, in this order: a reshape found in the
 * record at start; a member that is back for its role (it rejoins: a delta
 * resync when the bitmap covers what it missed, else a full one); a
 * recovery recorded as under way; a recovery onto a spare for a role that
 * has no usable member; an owed resync (when nothing is missing); an
 * interrupted scrub.  So a spare added while another job runs
 * is used when that job ends, and several spares rebuild several roles one
 * after the other.
 */
#ifndef RAIDCORE_SYNC_H
#define RAIDCORE_SYNC_H

#include "job.h"

struct raid_array;

extern const struct sync_ops sync_ops_resync, sync_ops_recover, sync_ops_rejoin,
  sync_ops_replace, sync_ops_check, sync_ops_repair;

int sync_thread_start (struct raid_array *a);
void sync_thread_stop (struct raid_array *a);

/* Begin copying the in-sync member t of a role onto spare s, while both
 * receive every write (the router's mirror), recorded on s's entry so that
 * a restart begins it again (state lock held, a claim over everything, no
 * job).  0 or an errno with a message. */
int sync_begin_replace (struct raid_array *a, int t, int s, char *err, size_t errlen);

/* Look for owed work and begin it (management lock held, state lock not). */
void sync_next_job (struct raid_array *a);

/* A recovery the worker will begin by itself once a grace ends: a spare
 * waits and a role is held by an away member still in its member-timeout
 * grace (state lock held). */
bool sync_recovery_due (struct raid_array *a);

#endif
