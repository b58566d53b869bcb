/* nbdkit-raid: is a candidate member this array itself?
 *
 * THEORY
 *
 * The danger.  A member can be any NBD export, and the array is itself an
 * NBD export: `add nbd+unix:///?socket=ITSELF` (or a URI of another server
 * that forwards to it, or a kernel /dev/nbdN attached to it) names the
 * array as its own member.  Initialising such a member writes the array's
 * own bytes (the ring wipe destroys its first 256 KiB of data), and its
 * first superblock commit flushes the member, which is a flush of the
 * array, which flushes every member — itself again: a loop of requests
 * each waiting on the next, which only the member timeout ends.  So the
 * candidate must be recognised before anything is written to it.
 *
 * Two tests, each sound in what it concludes:
 *   1. The export description (exact).  The plugin publishes
 *      "nbdkit-raid array UUID" as the NBD export description of every
 *      export it serves (identity_export_description); NBD members are
 *      opened asking for it (member_description).  A candidate whose
 *      description names this array's UUID is this array: UUIDs are random
 *      128-bit values, so there is no false positive.  It holds for direct
 *      connections and through servers that forward the description (nbdkit's
 *      nbd plugin does); it is the only test that needs no I/O.
 *   2. The read probe (any path).  Whatever sits between us and the
 *      candidate — a proxy that drops descriptions, a kernel NBD device used
 *      as a file member — a read of the candidate that is this array reaches
 *      this array's read path as a read of the same bytes.  So the probe
 *      arms a marker for a random 4 KiB range, reads that range from the
 *      candidate and checks whether the array saw a read overlapping it
 *      meanwhile; twice, at two random offsets.  A hit on both proves the
 *      candidate serves the array's bytes from the array (a client reading
 *      exactly those ranges during both probes is the only other cause:
 *      vanishingly rare, and it refuses an add, never corrupts).  Our own
 *      page cache of a file or device member is dropped for the range
 *      first (member_uncache), so a kernel NBD device on the array is
 *      caught even when its pages were cached; a miss still proves nothing
 *      when a cache beyond our reach answered (a proxy's own cache, dirty
 *      pages): such a member passes.
 *   Content comparison (the candidate's first bytes equal to the array's)
 *   is not used: an empty array and an empty candidate compare equal and
 *   must be allowed, and a copy of the array would be refused.
 *
 * Where: every path that takes a new member into a running array checks it
 * (add, reshape's add) right after opening it, with only the management
 * lock held (the probe's read of the array takes no lock a request needs),
 * before reading or writing anything else on it.  Assembly refuses a
 * member whose description names the array being assembled (another
 * server's export of this array).
 */
#ifndef RAIDCORE_IDENTITY_H
#define RAIDCORE_IDENTITY_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

struct member;
struct raid_array;

/* Every export of array uuid describes itself so: "nbdkit-raid array " and
 * the UUID (RAID_UUID_STRLEN - 1 characters). */
#define IDENTITY_TAG "nbdkit-raid array "
#define IDENTITY_DESC_LEN (sizeof IDENTITY_TAG - 1 + RAID_UUID_STRLEN)
void identity_export_description (const uint8_t uuid[RAID_UUID_LEN],
                                  char buf[IDENTITY_DESC_LEN]);

/* Test 1: -1 with a message naming m when its export description names
 * array uuid; else 0. */
int identity_check_description (const uint8_t uuid[RAID_UUID_LEN], struct member *m,
                                char *err, size_t errlen);

/* Both tests on a candidate for running array a, whose exported size is
 * array_size (management lock held; nothing written to m yet).  0, or
 * EBUSY with a message naming m, or the errno of a failed probe read (then
 * m is no use either). */
int identity_check_member (struct raid_array *a, uint64_t array_size, struct member *m,
                           char *err, size_t errlen);

/* The read probe's marker (one per array; the management lock serializes
 * probes).  hi == 0: disarmed. */
struct identity_probe {
  _Atomic uint64_t lo, hi;
  _Atomic unsigned hits;
};

/* The array's read path reports each read [off, off + count). */
static inline void
identity_note_read (struct identity_probe *p, uint64_t off, uint64_t count)
{
  uint64_t hi = atomic_load_explicit (&p->hi, memory_order_acquire);

  if (hi && off < hi && count > 0 && off + count > atomic_load (&p->lo))
    atomic_fetch_add (&p->hits, 1);
}

#endif
