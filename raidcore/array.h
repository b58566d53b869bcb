/* nbdkit-raid: an assembled array — the API the plugin uses.
 *
 * Assembly (raid_array_assemble) reads every member's superblock journal and
 * decides, without writing anything until every check has passed:
 *   - the array is the one named by the newest valid record (highest event
 *     count) among the given members; a member whose newest record names
 *     another array is refused, naming both UUIDs;
 *   - a role's member is current when its newest record has the newest event
 *     count, or is exactly one behind while the newest record lists it
 *     in_sync (an append interrupted by a crash reaches only some members;
 *     nothing was acknowledged after it); older members are stale and never
 *     read;
 *   - a member with no valid record, or none given for a role, is missing;
 *   - more missing/faulty/stale roles than the level tolerates refuses the
 *     start; otherwise the array starts degraded and the roles it lost are
 *     recorded faulty in a new journal record before any I/O is served.
 *
 * I/O functions return 0 or an errno value (EIO when the data cannot be
 * served; the log names the member and offset).  They never wait on
 * anything but their own member I/O and the stripe rows they touch.
 */
#ifndef RAIDCORE_ARRAY_H
#define RAIDCORE_ARRAY_H

#include <stdint.h>
#include <stdbool.h>

#include "sb.h"

struct member;
struct raid_array;

struct raid_assemble_opts {
  bool force;                /* start dirty+degraded without a write-hole log */
  bool no_autostart;         /* keep a running reshape frozen after restart */
  bool readonly;             /* members opened read-only; nothing is ever
                                written to them: no record, no repair, no
                                background work; management refused (EROFS) */
  bool gather;               /* hold partial-row writes briefly to join them
                                into whole rows (gather.h); acknowledged
                                before they are written, durable after a
                                flush */
  unsigned member_timeout;   /* seconds an NBD member whose connection is
                                lost stays missing (reconnected, its missed
                                regions recorded) before it is faulty; 0: no
                                grace, a lost member is faulty at once */
};

/* Assemble from the opened members (any order; ownership passes to the array
 * on success and on failure).  Returns 0 and *out, or -1 with a message. */
int raid_array_assemble (struct member **ms, int n,
                         const struct raid_assemble_opts *o,
                         struct raid_array **out, char *err, size_t errlen);

/* Close: flush, record a clean state when possible, close members. */
void raid_array_close (struct raid_array *a);

/* Start background threads (member dispatchers, the sync worker, the
 * watcher of away members).  Call after any fork. */
int raid_array_start (struct raid_array *a);

/* A member spec given at the start that could not be reached (an NBD
 * export that does not answer): the array keeps trying it, with backoff,
 * and takes it back if it is an absent member of this array (else it is
 * dropped with a message).  0 or ENOMEM. */
int raid_array_add_pending (struct raid_array *a, const char *spec);

uint64_t raid_array_size (const struct raid_array *a);
/* The NBD export description of the array's exports: "nbdkit-raid array
 * UUID", by which a server recognises its own export offered as a member
 * (identity.h). */
void raid_array_export_description (struct raid_array *a, char *buf, size_t len);
/* Full stripe width in bytes (data bytes per row). */
uint64_t raid_array_stripe_width (const struct raid_array *a);
bool raid_array_can_fua (const struct raid_array *a);

#define RAID_IO_FUA 1u

int raid_array_pread (struct raid_array *a, void *buf, uint64_t count, uint64_t off);
int raid_array_pwrite (struct raid_array *a, const void *buf, uint64_t count,
                       uint64_t off, unsigned flags);
int raid_array_flush (struct raid_array *a);
/* Zero a range; it reads back as zeroes.  With fast set, returns ENOTSUP
 * (touching nothing) unless the whole range can be zeroed faster than
 * written (whole stripe rows). */
int raid_array_zero (struct raid_array *a, uint64_t count, uint64_t off,
                     unsigned flags, bool fast);

/* Extents: calls cb for consecutive ranges covering [off, off + count),
 * in order, each flagged zero when every member in use stores nothing there
 * (so it reads as zeroes, degraded or not), otherwise data.  Returns 0 or
 * the first nonzero value returned by cb. */
typedef int (*raid_extent_fn) (void *opaque, uint64_t off, uint64_t len, bool zero);
int raid_array_extents (struct raid_array *a, uint64_t count, uint64_t off,
                        raid_extent_fn cb, void *opaque);

enum raid_health { RAID_HEALTH_OPTIMAL, RAID_HEALTH_DEGRADED, RAID_HEALTH_FAILED };
enum raid_health raid_array_health (struct raid_array *a);
const char *raid_health_name (enum raid_health h);

/* A copy of the current superblock state (for status / tests). */
void raid_array_get_sb (struct raid_array *a, struct raid_sb *out);

/* Runtime member state as the array sees it now. */
enum raid_member_state {
  RAID_MEMBER_IN_SYNC, RAID_MEMBER_FAULTY, RAID_MEMBER_MISSING,
  RAID_MEMBER_SPARE, RAID_MEMBER_REBUILDING, RAID_MEMBER_STALE,
};
const char *raid_member_state_name (enum raid_member_state s);

/* ------------------------------------------------------------------
 * Management (the control socket calls these; every one is safe to call
 * from any thread while I/O runs, returns within bounded time, and on
 * refusal returns an errno value with a message in err and changes
 * nothing: not even the event count).
 */

/* What status reports: a consistent snapshot. */
struct raid_member_status {
  int role;                       /* -1 for a spare */
  char spec[1024];                /* as given, or "" when missing */
  enum raid_member_state state;
  unsigned errors;
  uint64_t data_offset;
  int64_t away_seconds;           /* missing: seconds since it went away
                                     (-1: not away) */
  int64_t missed_regions;         /* regions its map of missed regions marks
                                     (-1: it has none) */
  uint64_t region_bytes;          /* member bytes per region of that map */
  bool down;                      /* cannot be used now: missing, or a spare
                                     whose connection is lost (or that is
                                     back but not yet checked) */
};

enum raid_sync_action {
  RAID_SYNC_IDLE, RAID_SYNC_FROZEN, RAID_SYNC_RESYNC, RAID_SYNC_RECOVER,
  RAID_SYNC_CHECK, RAID_SYNC_REPAIR, RAID_SYNC_RESHAPE,
};
const char *raid_sync_action_name (enum raid_sync_action a);

struct raid_geom_status { int level, layout; uint32_t chunk; int raid_disks; };

struct raid_status {
  uint8_t uuid[RAID_UUID_LEN];
  struct raid_geom_status geom;   /* as the array is now */
  int data_disks;
  uint64_t size;                  /* exported bytes */
  enum raid_health health;
  enum raid_sync_action sync_action;
  int nmembers;
  struct raid_member_status members[SB_MAX_MEMBERS];
  bool has_reshape;               /* reshape record present */
  struct {
    bool running;                 /* false: frozen */
    uint64_t position, total, boundary;
    int direction;                /* enum sb_direction */
    struct raid_geom_status from, to;
    char error[256];              /* why it was frozen by a failure, or "" */
  } reshape;
  bool has_progress;              /* a sync action is running or frozen */
  struct {
    enum raid_sync_action action;
    uint64_t done, total, rate;   /* bytes, bytes, bytes/s */
    int64_t eta_seconds;          /* -1 unknown */
    char error[256];              /* why the job was frozen by a failure, or "" */
  } progress;
  uint64_t mismatch_count;
  uint64_t resync_owed;           /* a resync is owed from this array offset
                                     (runs, or waits until the array is
                                     optimal); UINT64_MAX: none */
  uint64_t events;
  int consistency;                /* enum sb_consistency */
  uint64_t speed_min, speed_max;  /* bytes/s */
};

void raid_array_status (struct raid_array *a, struct raid_status *st);

/* A member named by role number ("2") or by spec (as given on the command
 * line or to add). */
int raid_array_fail (struct raid_array *a, const char *member, char *err, size_t errlen);
int raid_array_remove (struct raid_array *a, const char *member, char *err, size_t errlen);
/* Open spec, check it is large enough and unused, write its superblock
 * (spare), add it; a degraded array starts recovery onto it.  A member new
 * to the array (no record of it: not one removed earlier or coming back)
 * is probed for foreign signatures first (signature.h): one holding a
 * filesystem, partition table, RAID or LVM label is refused with EEXIST
 * unless force (then its magic bytes are erased). */
int raid_array_add (struct raid_array *a, const char *spec, bool force, char *err,
                    size_t errlen);
/* Rebuild `member` onto `with` (a spare; NULL: any spare) while it serves. */
int raid_array_replace (struct raid_array *a, const char *member, const char *with,
                        char *err, size_t errlen);
int raid_array_check (struct raid_array *a, bool repair, char *err, size_t errlen);
int raid_array_set_speed (struct raid_array *a, const uint64_t *min, const uint64_t *max,
                          char *err, size_t errlen);
/* Change the exported size.  RAID_RESIZE_MAX: all the room the members
 * have now (members that were enlarged are measured again).  A size below
 * the current one cuts data off and is refused unless force. */
#define RAID_RESIZE_MAX UINT64_MAX
int raid_array_resize (struct raid_array *a, uint64_t size, bool force,
                       char *err, size_t errlen);
/* Wait until the array is settled — no job runs and none is about to begin
 * (the worker has acted on the latest change), or the job is frozen — or
 * timeout_s passes (callers pass a bound).  Returns 1 when settled, 0 on
 * timeout. */
int raid_array_wait (struct raid_array *a, double timeout_s);

/* Reshape, and the requests that steer background work.  Prepare
 * (raid_array_reshape) validates the request and writes the new geometry
 * into every member's superblock with the reshape frozen at position 0; no
 * data moves until start.  Start begins or resumes a frozen reshape or
 * sync action; freeze stops the running one at a durable checkpoint; abort
 * cancels a prepared reshape that has not moved data, or a check/repair.
 * The rules: nbdkit-raid-plugin(1), Live reshape; nbdkit-raid-control(7). */
struct raid_reshape_req {
  int level;                      /* -1: unchanged */
  int layout;                     /* -1: unchanged / implied */
  uint32_t chunk;                 /* 0: unchanged */
  int raid_devices;               /* 0: unchanged / implied by add */
  int nadd;
  const char *const *add;         /* member specs */
  bool force;                     /* added members new to the array may hold
                                     a foreign signature (as raid_array_add) */
};
/* Prepare: validates, persists the frozen record; on success fills plan. */
int raid_array_reshape (struct raid_array *a, const struct raid_reshape_req *req,
                        struct raid_status *plan, char *err, size_t errlen);
int raid_array_start_action (struct raid_array *a, char *err, size_t errlen);
int raid_array_freeze (struct raid_array *a, char *err, size_t errlen);
int raid_array_abort (struct raid_array *a, char *err, size_t errlen);

/* Test hooks (tests/test-crash.c): make a reshape step at a time so that a
 * test thread can interleave its own I/O deterministically.  Set them
 * before raid_array_start; production code never sets them. */
struct raid_test_hooks {
  uint64_t reshape_window;        /* array bytes per reshape step (at least
                                     one new-layout row); 0: the default */
  bool reshape_pause;             /* after each step that does not end the
                                     reshape, the worker pauses as if frozen
                                     (raid_array_wait returns) without
                                     recording it; raid_array_start_action
                                     runs the next step */
};
void raid_array_set_test_hooks (struct raid_array *a, const struct raid_test_hooks *h);

#endif
