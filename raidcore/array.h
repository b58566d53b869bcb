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
};

/* Assemble from the opened members (any order; ownership passes to the array
 * on success and on failure).  Returns 0 and *out, or -1 with a message. */
int raid_array_assemble (struct member **ms, int n,
                         const struct raid_assemble_opts *o,
                         struct raid_array **out, char *err, size_t errlen);

/* Close: flush, record a clean state when possible, close members. */
void raid_array_close (struct raid_array *a);

/* Start background threads (member dispatchers).  Call after any fork. */
int raid_array_start (struct raid_array *a);

uint64_t raid_array_size (const struct raid_array *a);
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

#endif
