/* nbdkit-raid: the write-hole policy of a write — one decision, per layout.
 *
 * THEORY
 *
 * A stripe write updates several members; a crash part-way leaves parity
 * that does not match the data (the write hole).  The array's consistency
 * policy says what protects against that (sb.consistency):
 *   journal  the write-hole journal (journal.c): every partial-row write is
 *            logged durably before its in-place writes, full rows as an
 *            intent; replay at the next start;
 *   bitmap   the write-intent bitmap (bitmap.c): a region's bit is durable
 *            before its first write; the next start resyncs marked regions;
 *   resync   nothing per write; the next unclean start resyncs everything.
 * Which of these applies is decided HERE, for the layout being written,
 * not for the array as a whole: during a takeover (raid0 -> raid5) the
 * target layout has parity from its first write while the current one has
 * none, and it is protected from that first write.  The decision:
 *   - no parity in the layout (raid0, raid1), or a raw write (the reshape
 *     copy, zeroing new space, both redone after a crash): none;
 *   - journal policy: the journal, in either layout;
 *   - bitmap policy: the bitmap for the current layout (the bitmap
 *     describes its rows); nothing for a reshape target, whose rows are all
 *     resynced after an unclean stop (the finish records that it owes a
 *     whole-array resync);
 *   - resync policy: nothing.
 * The dirty flag (state_mark_dirty) is set before any write under every
 * policy; cons_start reads it at assembly and runs the policy's recovery.
 * Whatever the policy, a dirty start owes a resync from the start of the
 * array when a mirror layout (raid1) holds data: mirrors have no write
 * hole (a block outside the writes in flight is the same on every
 * mirror), but inside them the copies may differ, and reads of a row
 * would change with the mirror they go to.  The resync copies each row
 * from the mirror its reads use (stripe.c, mirror_source), so it changes
 * nothing a read returns (while the readable mirrors stay the same: one
 * that fails a read hands the row to the next).  It waits for every
 * mirror, and a degraded dirty raid1 start is not refused.  A resync the
 * record owed already starts again from the start too: the rows it had
 * passed may have been written when the array stopped.
 *
 * Callers: the stripe engine describes one group's member writes (struct
 * cons_group) and hands them to cons_write, which performs them through the
 * caller's issue function in the order the policy needs.
 */
#ifndef RAIDCORE_CONSISTENCY_H
#define RAIDCORE_CONSISTENCY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "journal.h"
#include "layout.h"

struct raid_array;

enum cons_policy { CONS_NONE, CONS_JOURNAL, CONS_BITMAP };

enum cons_policy cons_policy (const struct raid_array *a, const struct layout *L,
                              unsigned flags);

/* Perform a group's writes under the layout's policy.  Returns 0 or an
 * errno; *failed nonzero means a member (or a log or bitmap copy) failed:
 * the caller redoes the group. */
int cons_write (struct raid_array *a, const struct layout *L, unsigned flags,
                const struct write_batch *g, write_issue_fn issue, void *ctx,
                uint32_t *failed);

/* Flush every member (state_flush_all), noting the intents it covers. */
int cons_flush (struct raid_array *a);

/* A client's flush: cons_flush, and under the journal a checkpoint too
 * when a replay would have much to resync (REPLAY BOUND in journal.c);
 * the flush's answer is the members' flush, whatever the checkpoint's.
 * Holds no lock of a write (the checkpoint waits for writes in flight). */
int cons_client_flush (struct raid_array *a);

/* Before the writes of a FUA group (flags) that computes parity from
 * blocks it does not write (the journal policy's FUA rule, consistency.c). */
int cons_fua_sources (struct raid_array *a, const struct layout *L, unsigned flags);

/* At assembly, after the router knows the layouts: set up the policy's
 * state, and if the record says dirty run its recovery (journal replay, or
 * schedule a resync, refusing a degraded start that would expose the write
 * hole unless force).  0, or -1 with a message. */
int cons_start (struct raid_array *a, bool force, journal_resync_fn resync,
                char *err, size_t errlen);
void cons_stop (struct raid_array *a);

/* Why a read-only server cannot serve this array as its record left it
 * (before cons_start), or NULL when it can: a dirty array whose journal
 * must be replayed, or whose parity a degraded read would trust after a
 * torn write.  Dirty mirrors are served (reads of a row always go to the
 * same mirror); their resync waits for a read-write start. */
const char *cons_readonly_refusal (struct raid_array *a);

/* Make every write so far durable and the log empty (the journal's
 * checkpoint, or a flush of every member), committing update(a, arg) in the
 * same record when given.  Waits for journaled writes in flight.  The
 * reshape's steps and finish, resize and close use it. */
int cons_checkpoint (struct raid_array *a,
                     void (*update) (struct raid_array *a, void *arg), void *arg);

/* Whether a checkpoint must come before a member takes a role (a member
 * left one since the last: JOINS in journal.c); false unless the journal
 * is in use (state lock held, or a hint its holder re-checks). */
bool cons_join_due (struct raid_array *a);


#endif
