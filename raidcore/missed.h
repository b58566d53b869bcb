/* nbdkit-raid: maps of the regions an absent member missed.
 *
 * THEORY
 *
 * A member with a role that is away (its NBD connection dropped, or it was
 * not given at a start) keeps its data; what it lacks is every write made
 * while it was away.  Its map of missed regions records exactly those, so
 * that when it is back only they are resynced (a delta), for every
 * consistency policy.  Up to SB_MISSED_SLOTS members have a map at a time;
 * the slots live in the record (sb.h: uuid, state, rows per region, since)
 * and the bits in the missed-region area of every member in use, kept by a
 * region map (regmap.h).
 *
 * Invariant M: while a slot is RECORDING in the durable record, every row
 * of the current layout whose bytes on the away member may differ from
 * what the array holds is marked in the bits on every member in use —
 * every row written after the member's last record `since`.
 *
 * Keeping it:
 *   - begin (the member goes away; state lock held): the slot is taken in
 *     memory as INIT (recorded as free) with since = the events of the last
 *     record the member received, and the regions written since the last
 *     flush every member completed are marked in memory: the member
 *     acknowledged those writes but may not hold them durably.  Then
 *     missed_settle writes the whole area and only after that records the
 *     slot RECORDING.  A crash before that leaves the slot free: no delta,
 *     the member is rebuilt in full when it is back.
 *   - every client write of the current layout (cons_write) marks its rows
 *     in every slot, durably, before its member writes are issued
 *     (missed_start_write); one that was in flight when a member went away
 *     marks them when it ends, before it is acknowledged (missed_end_write).
 *     The write whose failure sent the member away is marked by the fault
 *     path itself (missed_mark_member_off).
 *   - a journal replay at a dirty start marks, in an away member's map,
 *     the rows where a record carries that member's block (the only
 *     blocks of it that a write since the last checkpoint changed), of
 *     the records on the members present.  Rows of a torn full-row write
 *     that it cannot make consistent are not rows the away member missed
 *     (its block there is as the write left it, the parity is what is
 *     wrong): they are not marked, and a resync is owed instead (journal.c,
 *     OWED RESYNC).  The records on the away member's own log are the
 *     only ones of the partial rows whose parity it holds (journal.c,
 *     PLACEMENT): invariant O below.
 *   - a member that comes into use (a spare added, one back) holds only the
 *     pages marked since: the watcher's next settle writes every recorded
 *     map whole again (settle_joined), so each member in use holds all of
 *     it — a start loads the union of the members present.
 *   - a reshape, or a change of the component size, ends every map (the
 *     rows change meaning): those members are rebuilt in full.
 *   - a member that comes back into use with no map (rebuilt in full) and
 *     goes away again before it received the record that put it back in
 *     use gets no map either: the record it holds is the one from before
 *     it first left, and the writes it missed since are marked nowhere.
 * Invariant O: a map begun at a start that replays the journal, for a
 * member absent from it (or whose log that replay could not read for want
 * of its connection), is named in the record's missed_unreplayed
 * (recorded with the slot): the member's own log may hold the only
 * records of rows whose parity it holds, and the map lacks those rows.
 * Before the member rejoins (a delta, or back as it is), missed_widen
 * reads its log as its own newest record left it (journal.c, REJOIN) and,
 * row by row, recomputes that parity from the row's data onto the member
 * (stripe_parity_to, the row locked), then flushes it; a row it cannot
 * (a data role's member not in sync, a read failed) is marked instead.
 * Not a mark first: a mark makes the delta rebuild its whole region, the
 * member's data blocks in it included, and in a row of a torn full-row
 * write whose resync is owed (journal.c, OWED RESYNC) that block would be
 * rebuilt from the torn parity.  A write of such a row racing this marked
 * it (invariant M), so the delta redoes it.  The bit clears in the record
 * that says the member rejoins.  A member whose log cannot be read
 * rejoins in full.  One taken back as it is with force at a start
 * (missed_owe_log) has the resync owed lowered to the first of its rows
 * instead (parity recomputed from the data once the array is optimal).
 * A map begun while serving needs none of this: what the member may lack
 * of its own writes is marked when it leaves (above).
 *
 * Nothing clears a bit while its slot records; the slot is freed, in the
 * record that says the member is in sync again, when its delta resync
 * ends (or when it is written off or removed).  Stale bits left in the
 * area by an earlier use only ever mark too much.
 *
 * Delta allowed (missed_judge): the slot records for this member's uuid,
 * and the member's own newest record is at least `since` (it received
 * every record until it left, so every write before is on it or marked),
 * shows it in sync or rebuilding in today's role, data offset and
 * geometry, with no reshape.  A member that was rebuilding when it left
 * needs its marked rows below its own recovery offset, and every row from
 * there (`from`) — unless that rebuild was a delta following this very map
 * (W below): then its map alone says what it needs.
 *
 * A delta follows its map alone (invariant W): before a member's delta
 * begins, the rows from its `from` on are marked too, durably
 * (missed_widen, run by the worker, no lock held), and a rejoin that is
 * not a delta ends the member's map, as does losing its role (the role
 * recovered onto another member: member_detach), so a member that later
 * takes a role as a spare, by a full recovery, has none.  So a member recorded rebuilding in
 * its role whose slot records is being resynced by a delta, and its map
 * marks every row it still needs beyond the rows its recorded recovery
 * offset covers: a delta cut short (a restart, a stop of the job) goes on
 * from there, following the map, instead of rebuilding the rest in full.
 * And a member whose own record shows it rebuilding, numbered at least
 * `since` + 2, by a build that keeps W (the compat bit below), left in the
 * middle of a delta following this map: the map marks every row it needs
 * (those the delta had not reached, and every write since it left).  For
 * a member holds at most one record past `since` from before the map
 * began (the commit it failed in may have reached its disk; every later
 * one skips it), so one numbered above that was written while it was in
 * use again, which only a rejoin puts it, and a rejoin that is not a delta
 * ends the map.
 * Records written by a build that did not keep W lack the compat bit
 * SB_FEAT_COMPAT_WHOLE_MAPS (a build drops the compat bits it does not
 * know): at a start from such a record the map of a member being rebuilt
 * ends, and its rebuild goes on in full (missed_whole_start).
 */
#ifndef RAIDCORE_MISSED_H
#define RAIDCORE_MISSED_H

#include <stdbool.h>
#include <stdint.h>

struct raid_array;
struct raid_sb;
struct layout;
struct member;

/* At start (after assembly, before serving; no lock needed): the maps of
 * the slots the record has, loaded as the union of what the members in use
 * hold.  0 or an errno. */
int missed_init (struct raid_array *a);
void missed_fini (struct raid_array *a);

/* Member t went away (state lock held): take a slot for it in memory, and
 * mark what it may lack.  No-op when it has one already, when the array
 * has no missed-region area, during a reshape, or when every slot is taken
 * (it will be rebuilt in full; logged). */
void missed_begin (struct raid_array *a, int t);
/* Make begun slots durable: write their areas, then record them (takes
 * the state lock; commits).  Called by the away watcher; 0 or an errno. */
int missed_settle (struct raid_array *a);
/* A dirty start that replays its journal, before the replay (assembly, no
 * lock held): every member with a role that was in use when the array
 * stopped and is absent from this start gets its map, durably (settled),
 * so that the rows the replay rewrites are marked in it and it may rejoin
 * by a delta: the journal holds every write since its last checkpoint,
 * the records on its own log (those of the rows whose parity it holds)
 * marked when it is back (invariant O: the map is recorded in
 * missed_unreplayed); rows the replay cannot make consistent are not
 * marked (journal.c OWED RESYNC).  0 or an errno (the maps not settled are
 * settled at the next try). */
int missed_begin_absent (struct raid_array *a);
/* Member t's log is one a replay did not read (absent from its start, or
 * its log could not be read): its map, when it has one, is named in
 * missed_unreplayed (O; a begun one when it is settled).  State lock
 * held. */
void missed_log_unread (struct raid_array *a, int t);
/* Member t's map ends (state lock held; the caller commits). */
void missed_end (struct raid_array *a, int t);
/* Every map ends (a reshape begins; state lock held; the caller commits). */
void missed_end_all (struct raid_array *a);
/* The current layout's rows changed (a reshape ended, the component size
 * grew): every map ends and new ones fit the new rows (state lock held, a
 * claim over everything; the caller commits).  0 or ENOMEM (the maps are
 * ended either way). */
int missed_reinit (struct raid_array *a);

/* Client writes of rows [row, row + n) of layout L: before the member
 * writes (0, or EAGAIN: a map write failed, redo; *token for the end), and
 * after them, before the acknowledgement.  No lock held. */
int missed_start_write (struct raid_array *a, const struct layout *L, uint64_t row,
                        uint64_t n, uint64_t *token);
int missed_end_write (struct raid_array *a, const struct layout *L, uint64_t row,
                      uint64_t n, uint64_t token);
/* The write at member offset `off` failed on away member t: mark its row,
 * durably (no lock held). */
void missed_mark_member_off (struct raid_array *a, int t, uint64_t off);
/* Mark row `row` of the current layout in the map of the member bound to
 * `role` (a journal replay: a record carries that role's block, and its
 * member is away), durably.  0 or ENOMEM (a failed page write left its
 * member out of use: the mark is on the members left). */
int missed_mark_role_row (struct raid_array *a, int role, uint64_t row);
/* Every member in use completed a flush that began when the write stamp
 * was `stamp` (missed_stamp, read before it began). */
uint64_t missed_stamp (struct raid_array *a);
void missed_flushed (struct raid_array *a, uint64_t stamp);

/* Whether member t, back with its own newest record `own`, can rejoin by
 * a delta, kept in its runtime state for the rejoin to use: delta,
 * delta_from (the member byte offset from which everything is rebuilt;
 * the role's size when only marked rows are) and whole (it was in sync
 * when it left).  State lock held. */
void missed_judge_member (struct raid_array *a, int t, const struct raid_sb *own);
/* How missed_widen reads a member's own log (journal_parity_rows: the
 * rows of L its log holds a record of its parity of, fn (arg, row) each). */
typedef int (*missed_log_fn) (struct member *m, const uint8_t *uuid, uint64_t epoch,
                              uint64_t seq, const struct layout *L, uint64_t off,
                              uint64_t size, int role,
                              int (*fn) (void *arg, uint64_t row), void *arg);
/* How missed_widen recomputes a rejoining member's parity of one row
 * (stripe_parity_to: 0, or nonzero when it could not). */
typedef int (*missed_fix_fn) (struct raid_array *a, const struct layout *L, uint64_t row,
                              int role, struct member *dst);
/* Invariants O and W for the stale members judged able to rejoin by a
 * delta: the rows their own log names (O, read by parity_rows) get their
 * parity recomputed onto the member (fix), or, where it cannot be, are
 * marked; for one judged from before its end, its rows from there are
 * marked (W); durably; then its delta_from is the role's end.  No lock
 * held (the worker, before it picks a job).  A member whose log cannot be
 * read, or whose marks cannot be made for want of memory, rejoins in
 * full. */
void missed_widen (struct raid_array *a, missed_log_fn parity_rows, missed_fix_fn fix);
/* Stale member t is taken back as it is with force at a start (before the
 * replay): the rows its own log names (O) cannot be resynced by a delta,
 * so the resync the record owes is lowered to the first of them (parity
 * recomputed from the data once the array is optimal; from row 0 when
 * the log cannot be read).  No lock needed (nothing runs yet). */
void missed_owe_log (struct raid_array *a, int t, missed_log_fn parity_rows);
/* Whether stale member t waits for missed_widen (state lock held). */
bool missed_widen_due (struct raid_array *a, int t);
/* At a start (after missed_init): the maps W cannot vouch for end: a
 * member's without a role (a record of an earlier build, which left it
 * when the member lost its role), and, when the record was written by a
 * build that did not keep W, those of members being rebuilt. */
void missed_whole_start (struct raid_array *a);

/* What state.c calls when members come and go and every member is flushed
 * (state.h: struct state_hooks): missed_begin, missed_end,
 * missed_mark_member_off, missed_stamp, missed_flushed. */
extern const struct state_hooks missed_hooks;
/* Member t's map: whether row is marked (state lock not held); rows per
 * region; marked regions (0 when it has none; state lock held). */
bool missed_row_marked (struct raid_array *a, int t, uint64_t row);
uint64_t missed_rows_per_region (struct raid_array *a, int t);
uint64_t missed_count (struct raid_array *a, int t);
/* Rows of the current layout, from start_row on, that member t's delta
 * needs: marked, or at least from_row (state lock held). */
uint64_t missed_rows_needed (struct raid_array *a, int t, uint64_t start_row,
                             uint64_t from_row);
/* Whether member t has a map (begun or recorded; state lock held). */
bool missed_has_map (struct raid_array *a, int t);
/* Whether member t, judged (missed_judge_member) able to rejoin by a
 * delta, missed nothing: its map marks no row its delta needs, so it is
 * back as it is, with no resync (state lock held). */
bool missed_nothing (struct raid_array *a, int t);
/* The events of the last record member t received before it left (its
 * map's `since`; 0 when it has no map): of two members away, the one
 * with the higher value left later.  State lock held. */
uint64_t missed_since (struct raid_array *a, int t);

#endif
