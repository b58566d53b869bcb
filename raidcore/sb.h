/* nbdkit-raid: the superblock journal kept on every member.
 *
 * On-disk placement (format version 1), at the start of every member:
 *
 *   [0, SB_RING_SIZE)            the journal ring: SB_RING_SLOTS slots of
 *                                SB_SLOT_SIZE bytes; each slot holds one
 *                                complete superblock record
 *   [SB_RING_SIZE, cons_offset + cons_size)   consistency area (write-intent
 *                                bitmap / write-hole log), sized at create
 *   ...                          head room (reshape writes out of place)
 *   [data_offset, ...)           data area (what Linux md would hold)
 *
 * Invariants:
 *   - A record is a complete superblock: little-endian fixed layout, magic,
 *     format version, feature bits, CRC32C over the whole slot (with the CRC
 *     field taken as zero).  A record whose magic, length or CRC is wrong is
 *     skipped, never trusted (torn write, bit rot, foreign data).
 *   - Every update appends: a record with events = previous + 1 goes to slot
 *     (events % SB_RING_SLOTS).  It never overwrites the newest valid record,
 *     so a torn append leaves the previous state intact and readable.
 *   - An append is acknowledged only after the slot write and a flush of the
 *     member completed (sb_append / sb_append_all).
 *   - The newest state of a member is its valid record with the highest
 *     event count.  Across members, the array's state is the newest record of
 *     any member of that array (assembly, array.c).
 *   - A record with an incompat feature bit this build does not know is
 *     refused (sb_decode fails naming the bit); unknown ro_compat bits allow
 *     read-only use; unknown compat bits are ignored.
 */
#ifndef RAIDCORE_SB_H
#define RAIDCORE_SB_H

#include <stdint.h>
#include <stddef.h>
#include <stdbool.h>

#include "geometry.h"
#include "util.h"

struct member;

#define SB_MAGIC "NBDRAID\x01"        /* 8 bytes */
#define SB_VERSION 1
#define SB_SLOT_SIZE 4096u
#define SB_RING_SLOTS 64u
#define SB_RING_SIZE (SB_SLOT_SIZE * SB_RING_SLOTS)   /* 256 KiB */
#define SB_MAX_MEMBERS RAID_MAX_MEMBERS               /* member table entries */

/* Limits of a valid record (the rules are at the top of sb.c). */
#define SB_MEMBER_SIZE_MAX ((uint64_t) INT64_MAX)     /* off_t's and NBD's limit:
                                                         every member offset plus
                                                         length fits */
#define SB_CONS_SIZE_MAX (16u << 20)                  /* journal replay reads the
                                                         area whole, per member */
#define SB_COUNTER_MAX (UINT64_C(1) << 62)            /* events, epochs, sequence
                                                         numbers never wrap */
#define SB_ALIGN 4096u                                /* offsets of areas */

/* Feature bits known to this build. */
#define SB_FEAT_COMPAT_SPEC_HINTS 1u  /* member specs at 2560 (record length 4096) */
#define SB_FEAT_COMPAT_OWNER 2u       /* the serving host and process at 264 */
#define SB_FEAT_INCOMPAT_MISSING 1u   /* a member entry may say "missing" (5) */
#define SB_FEAT_RO_COMPAT_MISSED 1u   /* maps of missed regions (at 344): a build
                                         that does not keep them may only read */
#define SB_FEAT_COMPAT_WHOLE_MAPS 4u  /* a delta follows its map alone (missed.h,
                                         invariant W): a rebuild under way with a
                                         map is a delta, resumed as one */
#define SB_FEAT_COMPAT_REPLACE 8u     /* a spare's entry may name the role
                                         whose member is being copied onto it
                                         (replaces, entry offset 52): the
                                         replace goes on after a restart; an
                                         older build forgets it */
#define SB_FEAT_COMPAT_UNREPLAYED 16u  /* missed_unreplayed at 488: maps
                                         whose member's own write-hole log a
                                         replay did not read (missed.h, O);
                                         an older build forgets them */
#define SB_FEAT_COMPAT_KNOWN (SB_FEAT_COMPAT_SPEC_HINTS | SB_FEAT_COMPAT_OWNER | \
                              SB_FEAT_COMPAT_WHOLE_MAPS | SB_FEAT_COMPAT_REPLACE | \
                              SB_FEAT_COMPAT_UNREPLAYED)
#define SB_FEAT_RO_COMPAT_KNOWN SB_FEAT_RO_COMPAT_MISSED
#define SB_FEAT_INCOMPAT_KNOWN SB_FEAT_INCOMPAT_MISSING

/* Member state in the member table (what the array believes). */
enum sb_member_state {
  SB_MEMBER_EMPTY = 0,       /* table slot unused */
  SB_MEMBER_IN_SYNC = 1,
  SB_MEMBER_FAULTY = 2,
  SB_MEMBER_SPARE = 3,
  SB_MEMBER_REBUILDING = 4,  /* has a role, data valid below recovery_offset */
  SB_MEMBER_MISSING = 5,     /* has a role but was absent (not given at a
                                start, unreachable): receives no records; when
                                it comes back it is resynced, then in sync */
};

#define SB_SPEC_HINT 48            /* bytes of a member's last known spec kept */
#define SB_OWNER_HOST 64           /* bytes of the serving host's name kept */

enum sb_consistency {
  SB_CONS_JOURNAL = 1,       /* write hole closed (default) */
  SB_CONS_BITMAP = 2,        /* write-intent bitmap */
  SB_CONS_RESYNC = 3,        /* full resync after unclean stop */
};

enum sb_reshape_state {
  SB_RESHAPE_NONE = 0,
  SB_RESHAPE_FROZEN = 1,
  SB_RESHAPE_RUNNING = 2,
};

enum sb_direction { SB_DIR_FORWARD = 0, SB_DIR_BACKWARD = 1 };

enum sb_sync_action { SB_SYNC_NONE = 0, SB_SYNC_CHECK = 1, SB_SYNC_REPAIR = 2 };

/* Array flags. */
#define SB_FLAG_DIRTY 1u      /* writes may be in flight; set before the first
                                 write after a clean state, cleared at a clean
                                 shutdown */
#define SB_FLAG_RESYNC_ALL 2u /* the owed resync (resync_offset) visits every
                                 row: the bitmap does not describe them (a
                                 reshape ended after an unclean stop) */

/* The map of regions a member missed while it was away (missed.c). */
#define SB_MISSED_SLOTS 4
enum sb_missed_state {
  SB_MISSED_FREE = 0,
  SB_MISSED_RECORDING = 1,   /* every region written since `since` is marked */
};
struct sb_missed_slot {
  uint8_t uuid[RAID_UUID_LEN];   /* the absent member */
  uint32_t state;                /* enum sb_missed_state */
  uint32_t rows_per_region;      /* rows of the current layout per bit */
  uint64_t since;                /* events of the record that began it */
};

struct sb_member_entry {
  uint8_t uuid[RAID_UUID_LEN];
  int32_t role;              /* 0..raid_disks-1, or -1 for a spare */
  uint32_t state;            /* enum sb_member_state */
  uint64_t data_offset;      /* bytes from member start to its data area */
  uint64_t new_data_offset;  /* during a reshape: where the new layout goes */
  uint64_t recovery_offset;  /* REBUILDING: member bytes (data-relative) rebuilt */
  uint32_t errors;           /* corrected read errors counted so far */
  uint32_t replaces;         /* a spare being made a copy of the member of a
                                role (`replace`): that role + 1; else 0 */
  char spec_hint[SB_SPEC_HINT];  /* last spec it was opened with (NUL-ended;
                                    the tail after "..." when longer) */
};

struct raid_sb {
  /* identity */
  uint32_t version;          /* SB_VERSION */
  uint64_t feature_compat, feature_ro_compat, feature_incompat;
  uint8_t array_uuid[RAID_UUID_LEN];
  uint8_t member_uuid[RAID_UUID_LEN];   /* the member this record is on */
  uint64_t events;
  uint64_t ctime_ns, utime_ns;          /* creation / this record, realtime ns */

  /* geometry (current) */
  uint32_t level, layout, chunk, raid_disks;
  uint64_t component_size;   /* bytes of each member's data area the geometry uses */
  uint64_t array_size;       /* exported bytes */
  uint64_t member_size;      /* usable size of this member, bytes */
  uint64_t cons_offset, cons_size;      /* consistency area on every member */
  uint32_t consistency;      /* enum sb_consistency */
  uint32_t flags;            /* SB_FLAG_* */

  /* background work checkpoints (array byte offsets; UINT64_MAX = none) */
  uint64_t resync_offset;    /* resync done below this; UINT64_MAX: in sync */

  /* reshape record */
  uint32_t reshape_state;    /* enum sb_reshape_state */
  uint32_t reshape_direction;/* enum sb_direction */
  uint64_t reshape_position; /* array bytes already moved (0 .. reshape_total) */
  uint32_t new_level, new_layout, new_chunk, new_raid_devices;
  uint64_t new_array_size;

  /* an interrupted scrub, resumed at the next start */
  uint32_t sync_action;      /* enum sb_sync_action */
  uint64_t sync_position;    /* array bytes done */
  uint64_t mismatch_count;   /* 4 KiB parity columns found wrong so far */

  /* write-hole journal (consistency journal): see journal.c */
  uint64_t journal_epoch;    /* changes at every checkpoint */
  uint64_t journal_seq;      /* first sequence number not yet checkpointed */

  /* the server holding the array open (owner_pid 0: none; a clean stop
   * clears it): NBD members cannot be locked, this record guards them */
  char owner_host[SB_OWNER_HOST];
  uint32_t owner_pid;
  uint64_t owner_start_ns;              /* when that server opened it */

  /* maps of missed regions (ro_compat SB_FEAT_RO_COMPAT_MISSED, set when
   * missed_size > 0): SB_MISSED_SLOTS maps of missed_size / SB_MISSED_SLOTS
   * bytes each at missed_offset of every member */
  uint64_t missed_offset, missed_size;
  struct sb_missed_slot missed[SB_MISSED_SLOTS];
  uint32_t missed_unreplayed;   /* bit i: slot i's member was absent from a
                                   start that replayed the write-hole log,
                                   whose records on its own log the replay
                                   never read (missed.h, O); only on a
                                   recording slot */

  /* member table, indexed by table slot (not role) */
  uint32_t nmembers;         /* used entries: 0..SB_MAX_MEMBERS */
  struct sb_member_entry members[SB_MAX_MEMBERS];
};

/* Encode sb into exactly SB_SLOT_SIZE bytes (computes the CRC).  The record
 * is written as format SB_VERSION whatever sb->version says; compat bits this
 * build does not know are dropped (it cannot carry their data).  Requires
 * sb->nmembers <= SB_MAX_MEMBERS. */
void sb_encode (const struct raid_sb *sb, void *buf);

/* Decode and validate one slot.  Returns 0; or -1 with a message in err:
 * "no superblock" (bad magic), "checksum mismatch", "unsupported format
 * version N", "incompatible feature 0x... (needs a newer nbdkit-raid)",
 * "bad member count", or the field that breaks a validation rule (sb.c:
 * "component_size 4095 is not a positive multiple of the chunk 65536").
 * On success err receives "" or, when the record has ro_compat bits this
 * build does not know, a note naming them (the record is usable read-only:
 * see sb_ro_compat_unknown).  On failure *sb is unspecified. */
int sb_decode (const void *buf, struct raid_sb *sb, char *err, size_t errlen);

/* The validation rules of sb.c applied to a decoded record (sb_decode
 * applies them; writers may check what they are about to write).  Returns
 * 0, or -1 with the field and the rule in err. */
int sb_validate (const struct raid_sb *sb, char *err, size_t errlen);

/* Rows of the data area of layout `next` (false: the current geometry, true:
 * the reshape target) that a valid record implies: component_size / chunk
 * for the current layout; for the target, the rows that hold the array's
 * bytes in the target geometry, max(array_size, new_array_size) rounded up
 * to whole rows.  0 when the geometry is invalid. */
uint64_t sb_layout_rows (const struct raid_sb *sb, bool next);

/* Does a member of `size` bytes hold the data areas that table entry e of
 * the valid record sb gives it (current layout, and the target during a
 * reshape)?  Asked of every entry with a role in use, and of one recorded
 * missing (its member away or stale): a member too small for its role
 * can never serve it, now or when it is taken back.  Returns 0, or -1
 * with the field and the sizes in err. */
int sb_check_member_size (const struct raid_sb *sb, const struct sb_member_entry *e,
                          uint64_t size, char *err, size_t errlen);

/* The ro_compat bits of sb this build does not know; nonzero means the
 * array may only be used read-only. */
static inline uint64_t
sb_ro_compat_unknown (const struct raid_sb *sb)
{
  return sb->feature_ro_compat & ~(uint64_t) SB_FEAT_RO_COMPAT_KNOWN;
}

/* The whole ring of one member, as read. */
struct sb_ring {
  int nvalid;                       /* valid records found */
  int ncorrupt;                     /* slots with our magic but failing checks */
  int nempty;                       /* slots without our magic */
  int nincompat;                    /* of ncorrupt: intact records of a newer
                                       format (unknown incompat bit or
                                       version), refused */
  uint64_t incompat_events;         /* highest events among those */
  struct raid_sb rec[SB_RING_SLOTS];/* valid records, newest (highest events) first */
  char first_error[256];            /* first reason a slot was rejected, for examine */
};

/* Read and decode every slot of m's ring.  Returns 0 (even when no record is
 * valid: check ring->nvalid), or an errno value when the member cannot be
 * read at all. */
int sb_ring_read (struct member *m, struct sb_ring *ring);

/* Newest valid record of m.  Returns 0, ENOENT when the member holds no
 * valid record (ring read fine), or another errno when it cannot be read.
 * On a ring with only incompatible records, returns EPROTONOSUPPORT with the
 * reason in err; likewise when an incompatible record is newer than the
 * newest valid one (the array moved on to a newer format: its older records
 * are stale).  On success err is "" or the ro_compat note of sb_decode. */
int sb_read_newest (struct member *m, struct raid_sb *sb, char *err, size_t errlen);

/* Append record sbs[i] to member ms[i] for i < n, all in parallel (one slot
 * write per member, then one flush per member), durable on return.  Each
 * sbs[i].events selects the slot.  Returns 0, or the errno of the first
 * failing member; results[i] (may be NULL) receives each member's errno.
 * Each member is also flushed before its slot write, so the append is a
 * barrier: every write to ms[i] that completed before the call is durable
 * before the record can be.  A member whose flush or write fails gets no
 * further operation of this call. */
int sb_append_all (struct member *const *ms, const struct raid_sb *sbs,
                   size_t n, int *results);

/* Zero m's whole ring (a new member), so no earlier record can resurface.
 * 0 or an errno. */
int sb_wipe_ring (struct member *m);

/* Find a member table entry by uuid / by role; NULL when absent.  Only
 * entries below nmembers whose state is not SB_MEMBER_EMPTY count.  When
 * several entries hold a role, sb_find_role prefers one that is not faulty,
 * then the lowest table slot. */
struct sb_member_entry *sb_find_member (struct raid_sb *sb, const uint8_t uuid[RAID_UUID_LEN]);
struct sb_member_entry *sb_find_role (struct raid_sb *sb, int role);

const char *sb_member_state_name (uint32_t state);   /* "in_sync", "faulty", ... */
/* Keep spec in a member entry's hint (its tail when too long). */
void sb_set_spec_hint (struct sb_member_entry *e, const char *spec);
const char *sb_consistency_name (uint32_t c);        /* "journal", "bitmap", "resync" */
int sb_consistency_parse (const char *name);         /* -1 when unknown */
const char *sb_reshape_state_name (uint32_t s);      /* "none", "frozen", "running" */

/* Ownership (an NBD export cannot be locked, so the record says who holds
 * the array open).  A record naming a process on this host that is still
 * running and started no later than the record was written (so not a
 * later process that got its pid again; a zombie counts as gone) is refused
 * (EBUSY), whatever force says; one naming another host is refused unless
 * force (that host's server may have crashed, which cannot be seen from
 * here); one naming nobody, this process, or a process that is gone is let
 * through.  0, or EBUSY with a message naming spec. */
int sb_check_owner (const struct raid_sb *sb, const char *spec, bool force,
                    char *err, size_t errlen);

/* Append to err (a member_open message for spec, refused because the
 * member is in use) who holds it, when spec's own newest superblock record
 * names a server holding its array open: "; its superblock says it is
 * held by pid N on host H".  Reads only (spec opened read-only). */
void sb_name_holder (const char *spec, char *err, size_t errlen);

#endif
